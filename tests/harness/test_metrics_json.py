"""hf_gaf.harness.metrics_json in process: the settings it records, the progress line, the weights' digest."""

from types import SimpleNamespace

import torch

from hf_gaf.harness.metrics_json import RESUME_KEYS, progress_line, resume_settings, weights_sha256


def test_the_weights_digest_changes_with_any_value_and_not_with_the_device_or_a_copy():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    copy = torch.nn.Linear(3, 2)
    copy.load_state_dict(model.state_dict())
    assert weights_sha256(model) == weights_sha256(copy) and len(weights_sha256(model)) == 64
    with torch.no_grad():
        copy.bias[0] += 1e-7
    assert weights_sha256(model) != weights_sha256(copy)


def test_resume_settings_hold_what_fixes_the_data_order_and_schedule():
    args = SimpleNamespace(**{k: i for i, k in enumerate(RESUME_KEYS)})
    settings = resume_settings(args, n_train_images=64)
    assert settings["max_train_samples"] == 64 and set(RESUME_KEYS) <= set(settings)


def test_the_progress_line_before_any_step_has_no_eta():
    state = SimpleNamespace(global_step=0, max_steps=0, epoch=None, num_train_epochs=3)
    line = progress_line(state, None, {}, 5.0)
    assert line.startswith("[hf_gaf progress] step 0/0, epoch 0.0/3") and "ETA" not in line
