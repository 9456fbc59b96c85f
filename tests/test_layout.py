"""The package's shape: imports run one way, the drivers import no TensorFlow, functions stay short."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lib" / "clipstudy"
#: Each layer may import only the layers listed for it (and itself); the base modules are open to all.
BASE = {"paths", "fileio", "lazy_tf", "__version__", "platforms", "caches", "palette"}
MAY_IMPORT = {
    "clipping": set(),
    "data": set(),
    "tasks": {"clipping", "data"},
    "training": {"clipping", "data", "tasks"},
    "study": {"clipping", "data", "training", "tasks"},
    "analysis": {"clipping", "data", "training", "tasks", "study"},
    "orchestration": {"clipping", "data", "training", "tasks", "study", "analysis"},
}
#: The longest a function may be, docstring included (60, then 55, until the longest were split up).
MAX_FUNCTION_LINES = 50
#: Imports that may sit inside a function, to defer a heavy dependency.
DEFERRED = {
    "tensorflow",
    "absl",
    "papermill",
    "jupytext",
    "dask",
    "distributed",
    "tensorboard",
    "clipstudy.data.tfds_builder",
    "matplotlib",
    "clipstudy.clipping.optimizer",  # Keras classes, defined when first asked for
    "IPython",  # in a kernel only
    "jupyter_client",
}


def modules():
    return sorted(p for p in PACKAGE.rglob("*.py"))


def layer_of(path: Path) -> str | None:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else None


def clipstudy_imports(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("clipstudy"):
            names = node.module.split(".")[1:] or [a.name for a in node.names]
            yield node, names[0]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("clipstudy."):
                    yield node, alias.name.split(".")[1]


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_one_way(path):
    layer = layer_of(path)
    tree = ast.parse(path.read_text())
    for node, target in clipstudy_imports(tree):
        if layer is None:
            assert target in BASE, f"{path.name} (a base module) imports clipstudy.{target}"
        else:
            allowed = MAY_IMPORT[layer] | {layer} | BASE
            assert target in allowed, f"{path} (layer {layer}) imports clipstudy.{target} at line {node.lineno}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_functions_are_short_and_import_only_heavy_dependencies_inside(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            assert length <= MAX_FUNCTION_LINES, f"{path.name}:{node.name} is {length} lines"
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import):
                    names = [a.name for a in inner.names]
                elif isinstance(inner, ast.ImportFrom):
                    names = (
                        [inner.module]
                        if inner.module != "clipstudy.data"
                        else [f"clipstudy.data.{a.name}" for a in inner.names]
                    )
                else:
                    continue
                for name in names:
                    assert any(name == d or name.startswith(d + ".") for d in DEFERRED), (
                        f"{path.name}:{node.name} imports {name} inside a function"
                    )


@pytest.mark.parametrize(
    "module",
    [
        "clipstudy",
        "clipstudy.clipping",
        "clipstudy.training",
        "clipstudy.tasks",
        "clipstudy.study.profiles",
        "clipstudy.study.sweep",
        "clipstudy.analysis.report",
        "clipstudy.orchestration.build_report",
    ],
)
def test_importing_does_not_import_tensorflow(module):
    code = f"import sys, {module}; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_a_profile_is_validated_without_tensorflow():
    code = (
        "import sys; from clipstudy.study import profiles; profiles.load_profile('quick'); "
        "print('tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_only_the_paths_module_knows_the_repository_layout():
    for path in modules():
        if path.name != "paths.py":
            assert "parents[" not in path.read_text(), f"{path} computes a repository path itself"
