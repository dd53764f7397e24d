"""A federated run from a config logs per-round scalars to the Lightning logger named in its yaml."""

from __future__ import annotations

import csv

import yaml

from lightning_addons.cli import main

CFG = {
    "seed": 0,
    "model": {
        "class_path": "ImageClassifier",
        "init_args": {"model": {"class_path": "LeNet5", "init_args": {"width": 0.5}}, "lr": 0.003},
    },
    "data": {"class_path": "DigitsDataModule", "init_args": {"resize": 32}},
    "federation": {"num_clients": 2, "partition": "iid", "rounds": 2, "local_epochs": 1},
}


def test_federate_writes_per_round_scalars_to_a_csv_logger_named_in_the_yaml(tmp_path):
    path = tmp_path / "fl.yaml"
    path.write_text(yaml.safe_dump(CFG))
    logger = {
        "class_path": "lightning.pytorch.loggers.CSVLogger",
        "init_args": {"save_dir": str(tmp_path / "logs")},
    }
    main(
        [
            "federate",
            "--config",
            str(path),
            f"--federation.logger={yaml.safe_dump(logger, default_flow_style=True)}",
        ]
    )
    files = list((tmp_path / "logs").rglob("metrics.csv"))
    assert len(files) == 1
    rows = list(csv.DictReader(files[0].open()))
    rounds = [int(r["step"]) for r in rows if r.get("val_acc")]
    assert rounds == [0, 1]
    assert all(float(r["bytes_total"]) > 0 for r in rows if r.get("bytes_total"))
