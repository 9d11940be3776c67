"""The walls between the wings: a torch-only core, one-line errors for missing extras, a library that never
imports the experiment harness, recipes importable as modules, ``--recipe`` as a warned alias of ``--preset``."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("transformers", "accelerate", "datasets", "timm", "torchvision", "evaluate", "pycocotools", "sklearn",
         "matplotlib", "scipy", "defusedxml", "PIL")


def _torch_only_site(folder: Path) -> Path:
    """A site folder holding links to torch and the distributions it requires (recursively), nothing else."""
    from importlib import metadata

    from packaging.requirements import Requirement

    folder.mkdir()
    seen, todo = set(), ["torch"]
    while todo:
        name = todo.pop()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional or platform-specific requirement that is not installed here
        if dist.name.lower() in seen:
            continue
        seen.add(dist.name.lower())
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
        for file in dist.files or []:
            top = file.parts[0]
            if top.endswith((".dist-info", ".data")) or top == ".." or "__pycache__" in file.parts:
                continue
            source, target = Path(dist.locate_file(top)), folder / top
            if source.exists() and not target.exists():
                target.symlink_to(source)
    return folder


def test_core_imports_and_steps_with_torch_only(tmp_path):
    """With only torch and its own requirements importable (no site-packages, ``python -S``), the core
    modules load and both GAF paths take a step; a wing and the ``hf-gaf`` command then fail in one line
    naming the extra."""
    site = _torch_only_site(tmp_path / "site")
    code = f"""
import sys
sys.path[:0] = [{str(site)!r}, {str(ROOT)!r}]
import torch
import hf_gaf, hf_gaf.functional, hf_gaf.gaf_sgd, hf_gaf.hook
from hf_gaf import GAFSGD, attach_gaf
model = torch.nn.Linear(3, 2)
opt = GAFSGD(model.parameters(), lr=0.1, momentum=0.9, fused=False)
adam = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters())
attach_gaf(adam)
for o in (opt, adam):
    for p in o.param_groups[0]["params"]:
        p.grad = torch.ones_like(p)
    o.step()
print("HEAVY", sorted(m for m in {HEAVY!r} if m in sys.modules))
try:
    import hf_gaf.trainer
except ImportError as err:
    print("TRAINER", err)
from hf_gaf.__main__ import main
print("CLI", main())
"""
    proc = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=180,
                          cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "HF_GAF_FUSED": "0"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "HEAVY []" in proc.stdout, proc.stdout
    assert "TRAINER hf_gaf.trainer needs transformers, accelerate: pip install 'hf_gaf[hf]'" in proc.stdout, proc.stdout
    assert "CLI 2" in proc.stdout and proc.stderr.strip().splitlines()[-1].startswith(
        "hf-gaf: error: hf_gaf.harness needs transformers, accelerate, torchvision"), proc.stderr[-2000:]
    assert proc.stderr.strip().endswith("pip install 'hf_gaf[recipes]'"), proc.stderr[-2000:]


@pytest.mark.parametrize("module, extra, package, statement", [
    ("hf_gaf.trainer", "hf", "transformers", "import hf_gaf.trainer"),
    ("hf_gaf.detection", "detection", "pycocotools", "import hf_gaf.detection"),
    ("hf_gaf.metrics", "detection", "pycocotools", "from hf_gaf.metrics import DetectionEvaluator"),
    ("hf_gaf.harness", "recipes", "timm", "import hf_gaf.harness"),
])
def test_a_missing_extra_is_one_line_naming_it(module, extra, package, statement):
    """With one package of the extra hidden, importing the wing fails in one line naming the extra (the
    metrics wing: its detection metrics; ``metric_path`` needs nothing)."""
    code = f"""
import importlib.util, sys
real = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a: None if name == {package!r} else real(name, *a)
from hf_gaf.metrics import metric_path
try:
    {statement}
except ImportError as err:
    print("ERROR", err)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    line = proc.stdout.strip()
    assert line == f"ERROR {module} needs {package}: pip install 'hf_gaf[{extra}]'", proc.stdout + proc.stderr[-2000:]


def _nodes(tree: ast.AST, at_import_time: bool):
    """Every node of ``tree``; with ``at_import_time``, not those inside functions (lazy imports)."""
    for node in ast.iter_child_nodes(tree):
        if at_import_time and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        yield node
        yield from _nodes(node, at_import_time)


def _imports(path: Path, at_import_time: bool = False) -> set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved against its package);
    with ``at_import_time``, only those imported when ``path`` itself is imported."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = set()
    for node in _nodes(ast.parse(path.read_text()), at_import_time):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(filter(None, [base, node.module or ""]))
            names |= {module} | {f"{module}.{a.name}" for a in node.names}
    return names


def test_the_library_never_imports_the_harness_and_the_core_imports_no_wing():
    library = [p for p in (ROOT / "hf_gaf").rglob("*.py") if "harness" not in p.parts]
    assert library
    for path in library:
        entry = path.name == "__main__.py"  # the hf-gaf command's entry: the one bridge to the harness
        allowed = {"hf_gaf.harness.cli", "hf_gaf.harness.cli.main"} if entry else set()
        bad = sorted(n for n in _imports(path) - allowed if n.startswith(("hf_gaf.harness", "hf_gaf.recipes")))
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"
    core = ("functional", "gaf_sgd", "step_path", "compiled_step", "hook", "triton_kernels", "__init__", "_extras")
    for name in core:
        path = ROOT / "hf_gaf" / f"{name}.py"
        wings = sorted(n for n in _imports(path, at_import_time=True)
                       if n.startswith(("hf_gaf.trainer", "hf_gaf.detection", "hf_gaf.metrics")))
        assert not wings, f"{path.relative_to(ROOT)} imports {wings}"


def test_no_import_circle_through_the_entry_point():
    """Nothing the harness imports imports the entry point back (it used to live in ``_extras``, which every
    wing imports)."""
    for path in (ROOT / "hf_gaf").rglob("*.py"):
        assert "hf_gaf.__main__" not in _imports(path), path


def test_the_classification_recipe_loads_no_detection_module():
    code = ("import sys, hf_gaf.recipes.classification.train; "
            "print(sorted(m for m in sys.modules if m.startswith(('hf_gaf.detection', 'hf_gaf.metrics.'))))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def test_recipes_are_importable_modules():
    from hf_gaf.recipes.classification import train
    from hf_gaf.recipes.detection import train_detr, train_faster_rcnn

    assert all(callable(m.main) for m in (train, train_detr, train_faster_rcnn))


def test_recipe_flag_is_a_warned_alias_of_preset(tmp_path):
    from transformers import HfArgumentParser

    from hf_gaf.harness.experiment_args import ExperimentArguments
    from hf_gaf.harness.presets import PresetArguments, parse_with_preset

    parser = HfArgumentParser((PresetArguments, ExperimentArguments))
    with pytest.warns(FutureWarning, match="--recipe is deprecated.*--preset"):
        (run, args), preset = parse_with_preset(parser, "classification",
                                                ["--recipe", "gaf", "--output_dir", str(tmp_path), "--use_cpu", "true"])
    assert preset == run.preset == "gaf" and args.gaf == "atan" and args.gaf_placement == "update"
