"""LV blood pool, LV myocardium and RV segmentation of perfusion series.

A 2D U-Net looks at one slice's motion-corrected series, summarised as
bolus-aligned enhancement images on a fixed physical grid, and labels the
reference frame; the labels are carried back to every frame by the motion.
torch is imported only by the submodules that need it.
"""
