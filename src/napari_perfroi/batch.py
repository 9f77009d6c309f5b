"""Batch analysis on dask.distributed: many studies, each one independent task.

Each task imports one study (a DICOM folder, a ``.zip`` of DICOM files, or a
copy of a study store) into ``OUT/studies/<name>.zarr``, runs every analysis
step, writes the report into ``OUT/reports/<name>/`` (with ``export_dicom``, the
DICOM results too, in ``OUT/reports/<name>/dicom/``) and returns a
:class:`StudyRecord`. A failing study gives a "failed" record and leaves no
output behind; it never stops the others. Inputs are only read.

The tasks run on a :class:`distributed.LocalCluster` of single-threaded
worker processes, or on the workers of an existing scheduler (which must see
the same file system). :func:`run_batch` writes ``OUT/summary.csv``.

Stress and rest studies of one patient can be paired (:func:`read_pairs`):
once both are analysed, a task per pair writes the perfusion reserve files
into the stress study's report folder and its summary row gains the reserve.
A study's LGE stack can be given beside it (:func:`read_lge_sources`): the
study's task imports it into the store's ``lge`` group, runs the LGE steps and
writes the viability files with the report; its summary row gains the scar
burden and the verdict of each territory. An LGE stack that cannot be used
leaves the perfusion results and says why in the QA flags.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import io
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .aha import TERRITORIES
from .errors import InputError

STATUS_DONE, STATUS_SKIPPED, STATUS_FAILED = "done", "skipped", "failed"
SEGMENT_COLUMNS = tuple(f"segment_{n}" for n in range(1, 17))
TERRITORY_RESERVE_COLUMNS = tuple(f"reserve_{name}" for name in TERRITORIES)
# Filled on a stress study's row when it is paired with a rest study.
RESERVE_COLUMNS = ("rest_study", "reserve_index", "global_reserve", *TERRITORY_RESERVE_COLUMNS)
VERDICT_COLUMNS = tuple(f"verdict_{name}" for name in TERRITORIES)
# Filled when the study has an LGE stack.
VIABILITY_COLUMNS = ("lge_source", "scar_percent", *VERDICT_COLUMNS)
SUMMARY_COLUMNS = (
    "study", "source", "status", "flow_model", "global_mbf", *SEGMENT_COLUMNS,
    "lowest_territory", *RESERVE_COLUMNS, *VIABILITY_COLUMNS, "aif_source", "qa", "seconds",
    "error",
)
# Median relative residual of the pixel-wise fits above which a study is flagged.
LOW_FIT_QUALITY = 0.25
# Worker environment: one thread per numerical library, so N workers use N cores.
SINGLE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
_COPY_PREFIX = ".copy-"
DICOM_FOLDER = "dicom"  # in a study's report folder, with --export-dicom
_GLOB_CHARACTERS = re.compile(r"[*?[]")


@dataclass(frozen=True)
class BatchJob:
    """One study of a batch: where it comes from and the name of its outputs."""

    name: str
    source: Path


@dataclass
class StudyRecord:
    """The outcome of one study: one row of ``summary.csv``."""

    study: str
    source: str
    status: str
    flow_model: str | None = None
    global_mbf: float | None = None
    segment_mbf: list[float | None] = field(default_factory=lambda: [None] * 16)
    lowest_territory: str | None = None
    rest_study: str | None = None
    reserve_index: str | None = None
    global_reserve: float | None = None
    territory_reserve: dict[str, float | None] = field(default_factory=dict)
    lge_source: str | None = None
    scar_percent: float | None = None
    verdicts: dict[str, str] = field(default_factory=dict)
    aif_source: str | None = None
    qa: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""

    def row(self) -> dict[str, Any]:
        """The summary row (:data:`SUMMARY_COLUMNS`)."""
        values = asdict(self)
        segments = dict(zip(SEGMENT_COLUMNS, values.pop("segment_mbf")))
        territories = values.pop("territory_reserve")
        verdicts = values.pop("verdicts")
        values.update(segments, qa="; ".join(self.qa), seconds=round(self.seconds, 2))
        values.update({f"reserve_{name}": territories.get(name) for name in TERRITORIES})
        values.update({f"verdict_{name}": verdicts.get(name) for name in TERRITORIES})
        return {column: values[column] for column in SUMMARY_COLUMNS}


# ---------------------------------------------------------------- planning
def expand_sources(patterns: list[str]) -> list[Path]:
    """Paths and glob patterns -> the study sources, in the order given, each once.

    Each source is one study; folders are not searched for more studies.
    Raises :class:`InputError` for a path or pattern that matches nothing.
    """
    sources: list[Path] = []
    for pattern in patterns:
        if Path(pattern).exists():  # a name such as "study[2]" is taken as it is
            matches = [pattern]
        elif _GLOB_CHARACTERS.search(pattern):
            matches = sorted(glob.glob(pattern))
        else:
            matches = []
        if not matches:
            raise InputError(f"{pattern}: no such file or folder")
        sources += [Path(path) for path in matches]
    unique: dict[Path, Path] = {}
    for source in sources:
        unique.setdefault(source.resolve(), source)
    return list(unique.values())


def plan_jobs(sources: list[Path], out_dir: Path) -> list[BatchJob]:
    """One job per source with a unique output name; refuses outputs inside an input."""
    out_dir = out_dir.resolve()
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: --out must be a folder")
    outputs = (out_dir / "studies", out_dir / "reports")
    for source in sources:
        resolved = source.resolve()
        if out_dir.is_relative_to(resolved):
            raise InputError(f"{source}: the output folder {out_dir} lies inside this input")
        if any(resolved.is_relative_to(output) for output in outputs):
            raise InputError(f"{source}: inputs cannot come from the batch's own outputs")
    taken: set[str] = set()  # case-folded: names must differ on any file system
    jobs = []
    for source in sources:
        base = study_name(source)
        name, number = base, 1
        while name.casefold() in taken:
            number += 1
            name = f"{base}-{number}"
        taken.add(name.casefold())
        jobs.append(BatchJob(name, source.absolute()))  # workers may have another cwd
    return jobs


def read_pairs(path: Path, jobs: list[BatchJob]) -> dict[str, str]:
    """Stress study name -> rest study name, from a CSV file with the columns ``stress``
    and ``rest`` (one pair a row; relative paths are from the file's folder).

    Each path must be one of the jobs' sources. Raises :class:`InputError` for a
    missing file or column, an unknown source, a study paired with itself or a
    stress study given twice.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{path}: no such pairs file") from None
    reader = csv.DictReader(io.StringIO(text))
    if not {"stress", "rest"} <= set(reader.fieldnames or []):
        raise InputError(f"{path}: a pairs file needs the columns stress and rest")
    names = {job.source.resolve(): job.name for job in jobs}
    pairs: dict[str, str] = {}
    for row in reader:
        where = f"{path}, line {reader.line_num}"
        stress, rest = (_paired_job(row[role], path.parent, names, where)
                        for role in ("stress", "rest"))
        if stress == rest:
            raise InputError(f"{where}: a study cannot be its own rest study")
        if stress in pairs:
            raise InputError(f"{where}: {row['stress']} already has a rest study")
        pairs[stress] = rest
    return pairs


def read_lge_sources(path: Path, jobs: list[BatchJob]) -> dict[str, Path]:
    """Study name -> its LGE stack (DICOM folder or zip), from a CSV file with the columns
    ``perfusion`` (one of the jobs' sources) and ``lge`` (relative paths are from the file's
    folder). Raises :class:`InputError` for a missing file, column or LGE stack, an unknown
    perfusion source or a study given twice."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{path}: no such LGE file") from None
    reader = csv.DictReader(io.StringIO(text))
    if not {"perfusion", "lge"} <= set(reader.fieldnames or []):
        raise InputError(f"{path}: an LGE file needs the columns perfusion and lge")
    names = {job.source.resolve(): job.name for job in jobs}
    sources: dict[str, Path] = {}
    for row in reader:
        where = f"{path}, line {reader.line_num}"
        study = _paired_job(row["perfusion"], path.parent, names, where)
        lge = path.parent / Path((row["lge"] or "").strip()).expanduser()
        if not (row["lge"] or "").strip() or not lge.exists():
            raise InputError(f"{where}: LGE stack {(row['lge'] or '').strip()!r} not found")
        if study in sources:
            raise InputError(f"{where}: {row['perfusion']} already has an LGE stack")
        sources[study] = lge.resolve()
    return sources


def _paired_job(text: str | None, folder: Path, names: dict[Path, str], where: str) -> str:
    """The job name of the source ``text`` names in a pairs file."""
    if not (text or "").strip():
        raise InputError(f"{where}: a stress and a rest study are needed")
    source = folder / Path(text.strip()).expanduser()  # an absolute path stays as it is
    try:
        return names[source.resolve()]
    except KeyError:
        raise InputError(f"{where}: {text.strip()} is not one of the batch's SRC studies") from None


def study_name(source: Path) -> str:
    """The output name of a source: its file or folder name without .zip/.zarr, file-safe."""
    stem = source.name
    for suffix in (".zarr", ".zip"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).lstrip(".") or "study"


def default_workers() -> int:
    """The usable cores of this machine (affinity and cgroup limits included)."""
    from dask.system import CPU_COUNT

    return max(1, CPU_COUNT)


# ---------------------------------------------------------------- the task
def process_study(job: BatchJob, out_dir: str, force: bool = False,
                  weights: Path | None = None, flow_model: str = "fermi",
                  export_dicom: bool = False, lge_source: Path | None = None) -> StudyRecord:
    """Import, analyse (segmenting with ``weights``, default the shipped model, and fitting
    flow with ``flow_model``) and report one study (``export_dicom``: and export its
    results as DICOM; ``lge_source``: with its LGE stack); never raises for a bad study.

    Skips a study whose report (and DICOM export) and analysed store already exist
    unless ``force``. On failure the study's outputs are removed and the record says why.
    """
    started = time.perf_counter()
    store, report_dir = output_paths(Path(out_dir), job.name)
    record = StudyRecord(job.name, str(job.source), STATUS_DONE,
                         lge_source=None if lge_source is None else str(lge_source))
    try:
        if not force and _is_complete(store, report_dir, export_dicom, lge_source is not None):
            record.status = STATUS_SKIPPED
            _fill_record(record, store, [])
        else:
            import_warnings = _analyse(job.source, store, report_dir, weights, flow_model,
                                       export_dicom, lge_source)
            _fill_record(record, store, import_warnings)
    except Exception as exc:  # noqa: BLE001 - one bad study must not stop the batch
        record = failed_record(job, Path(out_dir), exc)
    record.seconds = time.perf_counter() - started
    return record


def output_paths(out_dir: Path, name: str) -> tuple[Path, Path]:
    """The study store and the report folder of study ``name``."""
    return out_dir / "studies" / f"{name}.zarr", out_dir / "reports" / name


def failed_record(job: BatchJob, out_dir: Path, exc: BaseException) -> StudyRecord:
    """Remove what the study wrote; the "failed" record with a one-line error."""
    for path in output_paths(out_dir, job.name):
        shutil.rmtree(path, ignore_errors=True)
    return StudyRecord(job.name, str(job.source), STATUS_FAILED, error=error_line(exc))


def error_line(exc: BaseException) -> str:
    """One line: the message of an :class:`InputError`, else ``Type: message``."""
    text = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


def _is_complete(store: Path, report_dir: Path, export_dicom: bool = False,
                 with_lge: bool = False) -> bool:
    from .study import Study, StoreError

    if not (report_dir / "report.json").is_file():
        return False
    if with_lge and not (report_dir / "viability.json").is_file():
        return False
    if export_dicom and not (report_dir / DICOM_FOLDER).is_dir():
        return False
    try:
        study = Study.open(store)
    except StoreError:
        return False
    return study.has("aha") and "aha" in study.attrs["steps"]


def _analyse(source: Path, store: Path, report_dir: Path, weights: Path | None,
             flow_model: str, export_dicom: bool = False,
             lge_source: Path | None = None) -> list[str]:
    """Import or copy ``source`` to ``store``, run every step, write the report (and, with
    ``export_dicom``, the DICOM results, identified from a DICOM ``source``; with
    ``lge_source``, the LGE steps and the viability files).

    Returns the importers' warnings (e.g. skipped files, an LGE stack refused).
    """
    import dask

    from .dicom_results import export_results
    from .pipeline import STEPS, run_step, with_prerequisites
    from .report import write_report
    from .study import Study

    shutil.rmtree(store, ignore_errors=True)
    shutil.rmtree(report_dir, ignore_errors=True)
    store.parent.mkdir(parents=True, exist_ok=True)
    import_warnings = _import(source, store)
    study = Study.open(store, writable=True)
    _limit_threads()
    # Lazy arrays are computed in this task: on a worker, dask's default would hand them
    # to the cluster and free this worker's slot, running several studies at once on it.
    with dask.config.set(scheduler="synchronous"):
        for step in with_prerequisites(study, list(STEPS)):
            run_step(study, step, model=weights, flow_model=flow_model)
        if lge_source is not None:
            import_warnings += _analyse_lge(lge_source, study)
        write_report(study, report_dir)
        if export_dicom:
            export_results(study, report_dir / DICOM_FOLDER,
                           source=None if _is_store(source) else source)
    return import_warnings


def _analyse_lge(source: Path, study) -> list[str]:
    """Import the LGE stack ``source`` into ``study`` and run the LGE steps; the import's
    warnings, or the one line saying why the stack was not used."""
    from .lge.dicom_import import import_lge_dicom
    from .lge.pipeline import run_lge_steps

    warnings: list[str] = []
    try:
        import_lge_dicom(source, study.path, overwrite=True, warn=warnings.append)
        run_lge_steps(study)
    except InputError as exc:
        return [*warnings, f"LGE not analysed: {error_line(exc)}"]
    return [f"LGE: {text}" for text in warnings]


def _is_store(source: Path) -> bool:
    from .study import is_study_store

    return source.name.lower().endswith(".zarr") or is_study_store(source)


def _import(source: Path, store: Path) -> list[str]:
    """A study store at ``store`` from a store (copied), a DICOM folder or a zip."""
    from .dicom import import_dicom
    from .study import Study, replace_dir

    if _is_store(source):
        Study.open(source)  # validated before anything is copied
        staging = store.with_name(f"{_COPY_PREFIX}{store.name}-{uuid.uuid4().hex[:8]}")
        try:
            shutil.copytree(source, staging, ignore=shutil.ignore_patterns(".*"))
            replace_dir(staging, store)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return []
    warnings: list[str] = []
    import_dicom(source, store, overwrite=True, warn=warnings.append)
    return warnings


def _limit_threads() -> None:
    """One torch thread in this worker, and one thread for libraries it loads from now on
    (those already loaded took theirs from the worker's environment at its start)."""
    import torch

    os.environ.update(SINGLE_THREAD_ENV)
    torch.set_num_threads(1)


def _fill_record(record: StudyRecord, store: Path, import_warnings: list[str]) -> None:
    """Copy the flow results, the viability and the QA flags of an analysed store into
    ``record``."""
    from .lge.report import viability_document
    from .report import flow_report
    from .study import Study

    study = Study.open(store)
    report = flow_report(study)
    record.flow_model = report.get("flow_model", "fermi")
    record.global_mbf = report["global_mbf"]
    record.segment_mbf = list(report["segment_mbf"])
    record.lowest_territory = report.get("lowest_territory")
    record.aif_source = report.get("aif_source")
    record.qa = quality_flags(study, report, import_warnings)
    viability = viability_document(study)
    if viability is not None:
        record.scar_percent = _rounded(viability["global_scar_percent"])
        record.verdicts = dict(viability["territories"])
        record.qa += [f"LGE: {line}" for line in viability["qa"]]


def add_reserve(stress: StudyRecord, rest: StudyRecord, out_dir: str) -> StudyRecord:
    """``stress``'s record with the perfusion reserve against its ``rest`` study, whose
    files are written into the stress study's report folder; never raises.

    A failing pair (or a failed rest study) leaves the reserve empty and says why in
    the QA flags; the pair's own QA lines and warnings are added there too.
    """
    from .report import write_reserve_report
    from .reserve import pair_studies
    from .study import Study

    record = replace(stress, rest_study=rest.study)
    if stress.status == STATUS_FAILED:
        return record
    if rest.status == STATUS_FAILED:
        record.qa = [*record.qa, f"reserve: the rest study {rest.study} failed"]
        return record
    stress_store, report_dir = output_paths(Path(out_dir), stress.study)
    rest_store, _ = output_paths(Path(out_dir), rest.study)
    try:
        pair = pair_studies(Study.open(stress_store), Study.open(rest_store))
        write_reserve_report(pair, report_dir)
    except Exception as exc:  # noqa: BLE001 - one bad pair must not stop the batch
        record.qa = [*record.qa, f"reserve: {error_line(exc)}"]
        return record
    reserve = pair.reserve
    record.reserve_index = reserve.index
    record.global_reserve = _rounded(reserve.overall.reserve)
    record.territory_reserve = {name: _rounded(pooled.reserve)
                                for name, pooled in reserve.territories.items()}
    record.qa = [*record.qa, *(f"reserve: {line}" for line in pair.warnings + reserve.qa)]
    return record


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def quality_flags(study, report: dict[str, Any], import_warnings: list[str]) -> list[str]:
    """The study's QA flags: the import's warnings, fit quality, and the report's own
    (slice coverage among them)."""
    import numpy as np

    flags = [f"import: {' '.join(text.split())}" for text in import_warnings]
    if study.has("mbf_fit_error"):
        errors = study.read("mbf_fit_error")
        if np.isfinite(errors).any():
            median_error = float(np.nanmedian(errors))
            if median_error > LOW_FIT_QUALITY:
                flags.append(f"low fit quality (median pixel residual {median_error:.2f})")
    return flags + list(report.get("qa", []))


# ---------------------------------------------------------------- the runner
@contextlib.contextmanager
def open_client(workers: int | None = None, scheduler: str | None = None) -> Iterator[Any]:
    """A dask client: on an existing ``scheduler``, or on a new local cluster of
    ``workers`` single-threaded processes (default: one per core)."""
    import dask
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler)
        except (OSError, ValueError) as exc:
            raise InputError(f"{scheduler}: cannot reach the dask scheduler ({exc})") from None
        with client:
            yield client
        return
    n_workers = default_workers() if workers is None else workers
    if n_workers < 1:
        raise InputError(f"--workers must be at least 1, got {n_workers}")
    # Set before the workers start (numerical libraries read them once), and without
    # distributed's default MALLOC_TRIM_THRESHOLD_: setting it turns off glibc's adaptive
    # mmap threshold, and the steps' large temporary arrays then run ~50 % slower.
    environ = {**SINGLE_THREAD_ENV, "MALLOC_TRIM_THRESHOLD_": None}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}), \
            LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True) as cluster, \
            Client(cluster) as client:
        yield client


def run_batch(
    jobs: list[BatchJob],
    out_dir: Path,
    client: Any,
    *,
    force: bool = False,
    weights: Path | None = None,
    flow_model: str = "fermi",
    pairs: dict[str, str] | None = None,
    export_dicom: bool = False,
    lge_sources: dict[str, Path] | None = None,
    log: Callable[[str], None] = print,
) -> list[StudyRecord]:
    """Process every job on ``client``'s workers with a progress bar (``export_dicom``:
    with the DICOM results; ``lge_sources``: study name -> its LGE stack), then the
    reserve of each stress -> rest study name in ``pairs``; write ``summary.csv``.

    Returns the records in job order.
    """
    from distributed import as_completed
    from tqdm import tqdm

    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    log(f"dashboard: {client.dashboard_link}")
    futures = {
        client.submit(process_study, job, str(out_dir), force, weights, flow_model, export_dicom,
                      (lge_sources or {}).get(job.name), pure=False): job
        for job in jobs
    }
    records: dict[str, StudyRecord] = {}
    with tqdm(total=len(jobs), desc="studies", unit="study") as bar:
        for future in as_completed(futures):
            job = futures[future]
            try:
                record = future.result()
            except Exception as exc:  # noqa: BLE001 - e.g. the worker died on this study
                record = failed_record(job, out_dir, exc)
            if record.status == STATUS_FAILED:
                bar.write(f"{record.study}: failed: {record.error}")
            records[job.name] = record
            bar.update()
    if pairs:
        records.update(_pair_records(records, pairs, out_dir, client))
    ordered = [records[job.name] for job in jobs]
    write_summary(out_dir / "summary.csv", ordered)
    return ordered


def _pair_records(records: dict[str, StudyRecord], pairs: dict[str, str], out_dir: Path,
                  client: Any) -> dict[str, StudyRecord]:
    """The stress studies' records with their reserve (:func:`add_reserve` on the workers)."""
    from distributed import as_completed
    from tqdm import tqdm

    futures = {
        client.submit(add_reserve, records[stress], records[rest], str(out_dir), pure=False): stress
        for stress, rest in pairs.items()
    }
    paired = {}
    with tqdm(total=len(futures), desc="reserve", unit="pair") as bar:
        for future in as_completed(futures):
            stress = futures[future]
            try:
                paired[stress] = future.result()
            except Exception as exc:  # noqa: BLE001 - e.g. the worker died on this pair
                record = records[stress]
                paired[stress] = replace(record, rest_study=pairs[stress],
                                         qa=[*record.qa, f"reserve: {error_line(exc)}"])
            bar.update()
    return paired


def write_summary(path: Path, records: list[StudyRecord]) -> None:
    """Write ``summary.csv`` (one row per study, :data:`SUMMARY_COLUMNS`) atomically."""
    from .study import atomic_write_text

    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({key: "" if value is None else value
                         for key, value in record.row().items()})
    atomic_write_text(path, text.getvalue())


def count_line(records: list[StudyRecord]) -> str:
    """``"N done, M skipped, K failed"``."""
    counts = {status: 0 for status in (STATUS_DONE, STATUS_SKIPPED, STATUS_FAILED)}
    for record in records:
        counts[record.status] += 1
    return ", ".join(f"{count} {status}" for status, count in counts.items())

