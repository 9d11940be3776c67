"""hf_gaf.detection.coco_json in process: classes outside --classes are an error naming them, or skipped and
counted with skip_unknown (as the VOC loader does)."""

import json

import pytest
from PIL import Image

from hf_gaf.detection.coco_json import COCOFormatError, load_coco


def test_objects_of_unknown_classes_are_refused_or_skipped_and_counted(tmp_path):
    Image.new("RGB", (40, 30)).save(tmp_path / "a.jpg")
    spec = {"images": [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 30}],
            "categories": [{"id": 3, "name": "cat"}, {"id": 5, "name": "dog"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 1, 10, 10]},
                            {"id": 2, "image_id": 1, "category_id": 5, "bbox": [5, 5, 10, 10]}]}
    path = tmp_path / "a.json"
    path.write_text(json.dumps(spec))
    with pytest.raises(COCOFormatError, match="category 'dog' .id 5. is not one of the classes"):
        load_coco(str(path), str(tmp_path), classes=["cat"])
    with pytest.warns(UserWarning, match="skipped 1 objects of unknown classes"):
        ds = load_coco(str(path), str(tmp_path), classes=["cat"], skip_unknown=True)
    assert ds[0]["objects"]["category"] == [0] and ds[0]["objects"]["bbox"] == [[1.0, 1.0, 11.0, 11.0]]
