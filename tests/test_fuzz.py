"""The C decoders under libFuzzer with ASan + UBSan (fuzz/), and the seed corpus that feeds it.

- every seed decodes through the real Python API as its file name says, and the committed
  corpus is exactly what fuzz/make_corpus.py writes;
- the seeds alone reach every region, line and branch of the decoders (llvm-cov);
- deliberately broken builds are caught: ASan, UBSan, the read fence and the model are live;
- the bounded run (`make fuzz-ci`) ends cleanly, with no sanitizer report, after the runs it was
  asked for, and with more coverage than the seeds gave it.

The tools come from Debian (clang-14, libclang-rt-14-dev, llvm-14): missing, these tests are
skipped, except with CI=true where they fail.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest
from ci import unavailable

import nvme_ebs

ROOT = Path(__file__).resolve().parents[1]
FUZZ = ROOT / "fuzz"
CORPUS = FUZZ / "corpus"
OUT = ROOT / "build" / "fuzz"
TARGETS = ("stats", "identify", "stats_struct", "render")
CHECKS = {"ok", "short", "magic", "num_bins", "bin_range", "bin_order"}
PACKAGES = "clang-14 libclang-rt-14-dev llvm-14 make"
SANITIZER_REPORT = re.compile(r"ERROR: AddressSanitizer|runtime error:|FUZZ INVARIANT FAILED")


def _load_make_corpus() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_corpus", FUZZ / "make_corpus.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_corpus = _load_make_corpus()


def _seeds(kind: str) -> list[Path]:
    return sorted((CORPUS / kind).iterdir())


def _expected(seed: Path) -> tuple[str, str]:
    expected, _, what = seed.name.partition("--")
    return expected, what


# --- the corpus, through the Python API ------------------------------------------------------


def test_committed_corpus_is_what_make_corpus_writes() -> None:
    for kind, wanted in make_corpus.seeds().items():
        present = {p.name: p.read_bytes() for p in (CORPUS / kind).iterdir()}
        assert present.keys() == wanted.keys(), kind
        for name, data in wanted.items():
            assert present[name] == data, f"{kind}/{name} is stale: run fuzz/make_corpus.py"


def test_a_seed_for_every_validation_branch() -> None:
    names = {p.name for p in _seeds("stats")}
    for required in (
        "ok--ebs-28-bins-aws",
        "ok--ebs-64-bins",
        "ok--ebs-0-bins",
        "ok--instance-store-28-bins",
        "ok--version-1",
        "ok--open-last-bin-upper-0",
        "ok--open-last-bin-upper-u64max",
        "ok--closed-last-bin",
        "ok--page-8192-bytes",
        "short--empty",
        "short--4095-bytes",
        "magic--off-by-one",
        "num_bins--read-65",
        "num_bins--write-65",
    ):
        assert required in names
    assert {_expected(p)[0] for p in _seeds("stats")} == CHECKS
    for check in ("num_bins", "bin_range", "bin_order"):
        for histogram in ("read", "write"):
            assert any(n.startswith(f"{check}--{histogram}-") for n in names), (check, histogram)
    assert {_expected(p)[0] for p in _seeds("identify")} == {"ok", "short"}


@pytest.mark.parametrize("seed", _seeds("stats"), ids=lambda p: p.name)
def test_stats_seed_decodes_as_its_name_says(seed: Path) -> None:
    expected, what = _expected(seed)
    assert expected in CHECKS
    data = seed.read_bytes()
    if expected == "ok":
        stats = nvme_ebs.parse_log_page(data)
        assert stats.total_read_ops == make_corpus.COUNTERS["total_read_ops"]
        assert stats.volume_queue_length == make_corpus.COUNTERS["volume_queue_length"]
        return
    with pytest.raises(nvme_ebs.PageFormatError) as info:
        nvme_ebs.parse_log_page(data)
    assert info.value.check == expected, str(info.value)
    for histogram in ("read", "write"):
        if what.startswith(f"{histogram}-"):
            assert f"{histogram} latency histogram" in str(info.value)


@pytest.mark.parametrize("seed", _seeds("identify"), ids=lambda p: p.name)
def test_identify_seed_decodes_as_its_name_says(seed: Path) -> None:
    expected, _ = _expected(seed)
    data = seed.read_bytes()
    if expected == "ok":
        identity = nvme_ebs.parse_identify(data)
        assert identity.vid == data[0] | data[1] << 8
        assert identity.serial == data[4:24].split(b"\0", 1)[0].decode("ascii", "replace").strip()
        return
    assert expected == "short"
    with pytest.raises(nvme_ebs.PageFormatError) as info:
        nvme_ebs.parse_identify(data)
    assert info.value.check == "short"


# --- the fuzzers -------------------------------------------------------------------------------


def _tools(*names: str) -> None:
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        message = f"{', '.join(missing)} missing: apt-get install {PACKAGES}"
        unavailable(message)


def _env() -> dict[str, str]:
    # The ASan runtime must be the first library of a process: no fake controller preload here.
    return {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}


def _make(*goals: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["make", "--no-print-directory", "-f", "fuzz/fuzz.mk", *goals],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, f"make {' '.join(goals)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def fuzzers() -> None:
    _tools("make", "clang-14")
    _make("fuzz-build")


def _variant(macro: str) -> Path:
    _make(f"build/fuzz/variant/{macro}/fuzz_stats")
    return OUT / "variant" / macro / "fuzz_stats"


def _replay(binary: Path, seed: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """One input through a fuzz binary, without fuzzing."""
    return subprocess.run(
        [str(binary), f"-artifact_prefix={tmp_path}/", str(seed)],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize(
    ("macro", "seed", "report"),
    [
        ("FUZZ_SELFTEST_ASAN", "ok--ebs-28-bins-aws", "ERROR: AddressSanitizer: heap-buffer-overflow"),
        ("FUZZ_SELFTEST_UBSAN", "ok--ebs-28-bins-aws", "runtime error: shift exponent"),
        ("FUZZ_SELFTEST_FENCE", "short--4095-bytes", "ERROR: AddressSanitizer: use-after-poison"),
        ("FUZZ_SELFTEST_ORACLE", "ok--ebs-28-bins-aws", "FUZZ INVARIANT FAILED: out->total_write_bytes"),
    ],
)
def test_a_broken_build_is_caught(fuzzers: None, tmp_path: Path, macro: str, seed: str, report: str) -> None:
    good = _replay(OUT / "fuzz_stats", CORPUS / "stats" / seed, tmp_path)
    assert good.returncode == 0, good.stderr
    assert not SANITIZER_REPORT.search(good.stderr)

    bad = _replay(_variant(macro), CORPUS / "stats" / seed, tmp_path)
    assert bad.returncode != 0
    assert report in bad.stderr, bad.stderr[-3000:]


@pytest.mark.parametrize("reproducer", sorted((FUZZ / "crashes").glob("stats-*")), ids=lambda p: p.name)
def test_past_findings_stay_fixed(fuzzers: None, tmp_path: Path, reproducer: Path) -> None:
    # fuzz/crashes/README.md: e.g. an empty page, which fuzz_stats also decodes as (NULL, 0).
    proc = _replay(OUT / "fuzz_stats", reproducer, tmp_path)
    found = SANITIZER_REPORT.search(proc.stderr)
    assert found is None, proc.stderr[found.start() if found else 0 :][:2000]
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_past_findings_are_kept() -> None:
    assert (FUZZ / "crashes" / "stats-null-page-zero-length").read_bytes() == b""


def _coverage_rows(report: str) -> dict[str, list[int]]:
    """llvm-cov report -show-functions: name -> [regions, miss, lines, miss, branches, miss]."""
    rows = {}
    for line in report.splitlines():
        cols = line.split()
        if len(cols) == 10 and cols[1].isdigit():
            rows[cols[0]] = [int(cols[i]) for i in (1, 2, 4, 5, 7, 8)]
    return rows


def test_seeds_reach_every_branch_of_the_decoders(fuzzers: None) -> None:
    _tools("llvm-profdata-14", "llvm-cov-14")
    _make("fuzz-coverage")
    wanted = {
        "stats": ("nvme_ebs_decode_stats", "nvme_ebs.c:decode_histogram", "nvme_ebs.c:is_open_upper"),
        "identify": ("nvme_ebs_decode_identity", "nvme_ebs.c:copy_trimmed"),
    }
    for target, functions in wanted.items():
        rows = _coverage_rows((OUT / "cov" / f"{target}.txt").read_text())
        for function in functions:
            regions, regions_missed, lines, lines_missed, branches, branches_missed = rows[function]
            assert regions > 0 and lines > 0 and branches > 0, function  # the row is not vacuous
            assert (regions_missed, lines_missed, branches_missed) == (0, 0, 0), (target, function, rows[function])


_PROGRESS = re.compile(r"^#(\d+)\s+(INITED|DONE)\s+cov: (\d+) ft: (\d+)", re.MULTILINE)


def test_bounded_fuzzing_finds_nothing_and_grows_coverage(fuzzers: None) -> None:
    shutil.rmtree(OUT / "artifacts", ignore_errors=True)
    runs = int(os.environ.get("FUZZ_RUNS", "1000000"))
    _make("fuzz-ci", f"FUZZ_RUNS={runs}")
    for target in TARGETS:
        log = (OUT / "log" / f"{target}.ci.log").read_text()
        assert not SANITIZER_REPORT.search(log), target
        assert re.search(rf"^stat::number_of_executed_units: {runs}$", log, re.MULTILINE), target
        progress = {kind: (int(cov), int(ft)) for _, kind, cov, ft in _PROGRESS.findall(log)}
        (cov_seeds, ft_seeds), (cov_end, ft_end) = progress["INITED"], progress["DONE"]
        # The seeds already reach every edge of the decoders, so the fuzzer's gain shows in
        # features (edge hit-count buckets, compared values), and in edges for the target
        # that starts from an empty input.
        assert cov_end >= cov_seeds, target
        assert ft_end > ft_seeds, (target, ft_seeds, ft_end)
        if target == "stats_struct":
            assert cov_end > cov_seeds, (cov_seeds, cov_end)
    assert not list((OUT / "artifacts").glob("*")), "libFuzzer left a crash reproducer"
