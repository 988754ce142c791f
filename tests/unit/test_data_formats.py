"""CIFAR-10 archives, LEAF JSON and CSV tables: small files in the real formats, written here."""

from __future__ import annotations

import json
import pickle
import tarfile

import numpy as np
import pytest

from psgd.data import load_dataset, natural_partition
from psgd.data.cifar import TEST_BATCH, TRAIN_BATCHES
from psgd.errors import ConfigError, DatasetError

ROWS = 4  # images per CIFAR batch


def cifar_images(seed: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (ROWS, 3072), dtype=np.uint8), rng.integers(0, 10, ROWS).tolist()


def write_cifar_python(folder):
    folder.mkdir()
    for seed, name in enumerate([*TRAIN_BATCHES, TEST_BATCH]):
        data, labels = cifar_images(seed)
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                 b"filenames": [b"x.png"] * ROWS}  # fmt: skip
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))


def write_cifar_binary(folder):
    folder.mkdir()
    for seed, name in enumerate([*TRAIN_BATCHES, TEST_BATCH]):
        data, labels = cifar_images(seed)
        records = np.hstack([np.array(labels, np.uint8)[:, None], data])
        (folder / f"{name}.bin").write_bytes(records.tobytes())


@pytest.mark.parametrize("writer", [write_cifar_python, write_cifar_binary])
@pytest.mark.parametrize("archived", [False, True])
def test_cifar10_reads_both_official_formats_folder_or_tar_gz(tmp_path, writer, archived):
    folder = tmp_path / "cifar-10-batches"
    writer(folder)
    path = folder
    if archived:
        path = tmp_path / "cifar-10.tar.gz"
        with tarfile.open(path, "w:gz") as archive:
            archive.add(folder, arcname=folder.name)
    data = load_dataset(f"cifar10:{path}")
    assert data.x_train.shape == (5 * ROWS, 3072) and data.x_test.shape == (ROWS, 3072)
    assert data.n_classes == 10 and data.x_train.dtype == np.float32
    raw, labels = cifar_images(0)
    # stored channel-major (R plane, G plane, B plane); read as height, width, channel
    red_at_0_1, green_at_0_1 = raw[0, 1], raw[0, 1024 + 1]
    assert data.x_train[0, (0 * 32 + 1) * 3 + 0] == pytest.approx(red_at_0_1 / 255)
    assert data.x_train[0, (0 * 32 + 1) * 3 + 1] == pytest.approx(green_at_0_1 / 255)
    assert data.y_train[:ROWS].tolist() == labels


def test_cifar10_refuses_a_pickle_that_would_run_code(tmp_path):
    folder = tmp_path / "cifar"
    write_cifar_python(folder)

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(DatasetError, match="data_batch_3.*refused to load builtins.print"):
        load_dataset(f"cifar10:{folder}")


def test_cifar10_names_the_missing_batch_and_a_truncated_binary_one(tmp_path):
    folder = tmp_path / "bin"
    write_cifar_binary(folder)
    (folder / "test_batch.bin").write_bytes(b"\x01" * 100)
    with pytest.raises(DatasetError, match="test_batch.bin: 100 bytes"):
        load_dataset(f"cifar10:{folder}")
    (folder / "data_batch_2.bin").unlink()
    with pytest.raises(DatasetError, match="no CIFAR-10 batch 'data_batch_2'"):
        load_dataset(f"cifar10:{folder}")
    with pytest.raises(DatasetError, match="cs.toronto.edu"):
        load_dataset(f"cifar10:{tmp_path / 'nowhere'}")


def write_leaf(root, users: dict[str, int], width: int = 6, text: bool = False):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        (root / "data" / split).mkdir(parents=True)
        user_data = {}
        for user, n in users.items():
            if text:
                x = ["".join(rng.choice(list("abc ?"), width)) for _ in range(n)]
                y = [str(rng.choice(list("abc"))) for _ in range(n)]
            else:
                x = rng.random((n, width)).round(3).tolist()
                y = rng.integers(0, 5, n).tolist()
            user_data[user] = {"x": x, "y": y}
        content = {"users": list(users), "num_samples": list(users.values()),
                   "user_data": user_data}  # fmt: skip
        (root / "data" / split / f"all_data_0_niid_0_keep_0_{split}_9.json").write_text(
            json.dumps(content)
        )


def test_leaf_keeps_each_rows_writer_and_natural_partition_gives_one_client_each(tmp_path):
    write_leaf(tmp_path / "femnist", {"f0001_12": 3, "f0002_40": 5, "f0003_07": 2})
    data = load_dataset(f"leaf:{tmp_path / 'femnist'}")
    assert data.name == "femnist" and data.x_train.shape == (10, 6)
    assert data.groups.tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 2, 2]
    parts = natural_partition(data.groups, 3, data.name)
    assert [p.tolist() for p in parts] == [[0, 1, 2], [3, 4, 5, 6, 7], [8, 9]]
    two = natural_partition(data.groups, 2, data.name)
    assert [p.tolist() for p in two] == [[0, 1, 2, 8, 9], [3, 4, 5, 6, 7]]
    with pytest.raises(ConfigError, match="has 3 writers/users.*--node_count 3"):
        natural_partition(data.groups, 4, data.name)


def test_leaf_text_becomes_letter_indices(tmp_path):
    write_leaf(tmp_path / "shakespeare", {"ROMEO": 2, "JULIET": 3}, width=8, text=True)
    data = load_dataset(f"leaf:{tmp_path / 'shakespeare' / 'data'}")
    assert data.x_train.shape == (5, 8)
    assert set(np.unique(data.x_train)) <= {1.0, 24.0, 53.0, 54.0, 55.0}  # " ", "?", a, b, c
    assert set(data.y_train.tolist()) <= {53, 54, 55}


def test_leaf_errors_name_the_file_and_user(tmp_path):
    write_leaf(tmp_path / "d", {"u1": 2})
    bad = next((tmp_path / "d" / "data" / "train").glob("*.json"))
    content = json.loads(bad.read_text())
    content["user_data"]["u1"]["y"] = [1]
    bad.write_text(json.dumps(content))
    with pytest.raises(DatasetError, match=f"{bad.name}: user 'u1' has 2 rows of x and 1 of y"):
        load_dataset(f"leaf:{tmp_path / 'd'}")
    with pytest.raises(DatasetError, match="no LEAF .json files"):
        load_dataset(f"leaf:{tmp_path}")


def test_natural_partition_needs_writers(tmp_path):
    with pytest.raises(ConfigError, match="leaf:PATH"):
        natural_partition(None, 2, "mnist")


def write_csv(path, rows, header="radius,texture,diagnosis"):
    path.write_text(header + "\n" + "\n".join(rows) + "\n")


def test_csv_with_a_text_label_column_splits_80_20(tmp_path):
    rows = [f"{i * 0.5},{i % 3},{'M' if i % 2 else 'B'}" for i in range(10)]
    write_csv(tmp_path / "cancer.csv", rows)
    data = load_dataset(str(tmp_path / "cancer.csv"))
    assert data.x_train.shape == (8, 2) and data.x_test.shape == (2, 2)
    assert data.n_classes == 2
    both = np.vstack([data.x_train, data.x_test])
    labels = np.concatenate([data.y_train, data.y_test])
    odd = both[:, 0] * 2 % 2 == 1  # i odd -> M -> class 1
    assert (labels == odd).all()


def test_csv_pairs_train_and_test_files_and_takes_the_last_column_without_a_label_name(tmp_path):
    write_csv(tmp_path / "t_train.csv", ["1,2,0", "3,4,2"], header="a,b,kind")
    write_csv(tmp_path / "t_test.csv", ["5,6,1"], header="a,b,kind")
    data = load_dataset(str(tmp_path / "t_train.csv"))
    assert data.name == "t" and data.y_train.tolist() == [0, 2] and data.y_test.tolist() == [1]
    assert data.x_test.tolist() == [[5.0, 6.0]] and data.n_classes == 3


def test_csv_errors_name_file_line_and_column(tmp_path):
    write_csv(tmp_path / "x.csv", ["1,2,B", "1,oops,M"])
    with pytest.raises(DatasetError, match=r"x.csv:3: column 'texture' holds 'oops'"):
        load_dataset(str(tmp_path / "x.csv"))
    write_csv(tmp_path / "y.csv", ["1,2,B", "1,M"])
    with pytest.raises(DatasetError, match=r"y.csv:3: 2 values, the header has 3"):
        load_dataset(str(tmp_path / "y.csv"))
    with pytest.raises(DatasetError, match="no such file"):
        load_dataset(str(tmp_path / "z.csv"))
