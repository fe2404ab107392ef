"""The README's "Python API" block, run as written on the instant config's generated data
(only its four path variables are replaced), so the README cannot drift from the code."""

import json
import os
import re

import pytest

from tests.conftest import INSTANT, REPO

PATHS = ("config_file", "weights", "image_file", "results_file")


def readme_python_api_block():
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    section = readme.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the Python API section has one python block"
    return blocks[0]


def with_paths(code, **paths):
    for name, value in paths.items():
        code, n = re.subn(rf'^{name} = ".*"$', f"{name} = {str(value)!r}", code, flags=re.M)
        assert n == 1, f"README Python API: no line '{name} = \"...\"'"
    return code


def test_readme_python_api_runs(datasets_root, tmp_path, capsys):
    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.structures import Instances

    from longtail_d2.engine import prepare_run, trainer_class

    # an (untrained) checkpoint of the instant config's model
    cfg = prepare_run(INSTANT, ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    DetectionCheckpointer(trainer_class(cfg).build_model(cfg), save_dir=str(tmp_path)).save("w")
    # a results file that is the validation ground truth itself: box AP 100 by definition
    with open(os.path.join(datasets_root, "longtail_synth_instant", "lvis_val.json")) as f:
        gt = json.load(f)
    results = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1}
        for a in gt["annotations"]
    ]
    results_file = tmp_path / "instances_results.json"
    results_file.write_text(json.dumps(results))
    image = gt["images"][0]

    code = with_paths(
        readme_python_api_block(),
        config_file=INSTANT,
        weights=tmp_path / "w.pth",
        image_file=os.path.join(datasets_root, "longtail_synth_instant", image["file_name"]),
        results_file=results_file,
    )
    namespace = {}
    exec(compile(code, "README.md (Python API)", "exec"), namespace)

    instances = namespace["instances"]
    assert isinstance(instances, Instances)
    assert instances.image_size == (image["height"], image["width"])
    assert namespace["tasks"] == ["bbox"]
    assert namespace["results"]["bbox"]["AP"] == pytest.approx(100.0)
    assert namespace["results"]["bbox"]["APr"] == pytest.approx(100.0)
    assert "'AP': 100.0" in capsys.readouterr().out
