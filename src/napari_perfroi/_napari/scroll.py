"""Dock contents that scroll, so that every dock fits a small screen."""

from __future__ import annotations

from qtpy.QtWidgets import QFrame, QScrollArea, QVBoxLayout, QWidget


def scrolling_layout(dock: QWidget) -> QVBoxLayout:
    """The layout to fill with ``dock``'s contents, inside a scroll area that fills the dock.

    Without it a dock's minimum height is the sum of its contents' (a figure alone
    asks for hundreds of pixels), and napari grows the window past the screen.
    """
    contents = QWidget()
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setWidget(contents)
    outer = QVBoxLayout(dock)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(scroll)
    return QVBoxLayout(contents)
