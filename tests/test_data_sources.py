"""Tests for the data readers: specs, files, folders, TFDS datasets and bad data."""

import gzip
from pathlib import Path

import pytest
import tensorflow_datasets as tfds

from nlp_attn.config import DataConfig
from nlp_attn.data.sources import label_name, parse_spec, read_source
from nlp_attn.errors import ConfigError, DataError

FIXTURES = Path(__file__).parent / "data"


def write(path: Path, content: str | bytes) -> Path:
    """Writes text or bytes, gzip-compressed when the name ends in `.gz`."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    if path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def only(spec: str, config: DataConfig | None = None):
    return read_source(spec, config or DataConfig()).select("train")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("default", ("default", "")),
        ("tfds:glue/sst2", ("tfds", "glue/sst2")),
        ("csv:/tmp/a:b.csv", ("csv", "/tmp/a:b.csv")),
        ("dir:reviews", ("dir", "reviews")),
    ],
)
def test_parse_spec(spec, expected):
    parsed = parse_spec(spec)
    assert (parsed.scheme, parsed.target) == expected
    assert str(parsed) == spec


def test_unknown_scheme_lists_the_valid_ones_and_suggests_a_fix():
    with pytest.raises(ConfigError) as error:
        parse_spec("reviews.csv")
    message = str(error.value)
    assert "tfds:NAME[/CONFIG]" in message and "jsonl:PATH" in message
    assert "csv:reviews.csv" in message
    with pytest.raises(ConfigError, match="names no csv target"):
        parse_spec("csv:")


def test_csv_reads_quoted_texts_and_string_labels():
    examples = only(f"csv:{FIXTURES / 'reviews.csv'}")
    assert len(examples) == 12
    assert examples.texts[0] == "A warm, funny film that earns every laugh."
    assert examples.texts.dtype == object and examples.labels.dtype == object
    assert sorted(set(examples.labels)) == ["neg", "pos"]


def test_tsv_is_read_without_quoting_and_gz_transparently(tmp_path):
    plain = only(f"tsv:{FIXTURES / 'reviews.tsv'}", DataConfig(text_field="sentence"))
    assert 'A "feel-good" film that actually feels good.' in list(plain.texts)
    assert set(plain.labels) == {"0", "1"}
    compressed = tmp_path / "reviews.tsv.gz"
    write(compressed, (FIXTURES / "reviews.tsv").read_bytes())
    zipped = only(f"tsv:{compressed}", DataConfig(text_field="sentence"))
    assert list(zipped.texts) == list(plain.texts)


def test_jsonl_with_configured_fields_integer_labels_and_gz(tmp_path):
    config = DataConfig(text_field="review", label_field="stars")
    plain = only(f"jsonl:{FIXTURES / 'reviews.jsonl'}", config)
    assert set(plain.labels) == {"1", "5"}
    compressed = write(
        tmp_path / "reviews.jsonl.gz", (FIXTURES / "reviews.jsonl").read_bytes()
    )
    zipped = only(f"jsonl:{compressed}", config)
    assert list(zipped.labels) == list(plain.labels)


def test_csv_gz_matches_plain_csv(tmp_path):
    compressed = write(tmp_path / "r.csv.gz", (FIXTURES / "reviews.csv").read_bytes())
    plain = only(f"csv:{FIXTURES / 'reviews.csv'}")
    zipped = only(f"csv:{compressed}")
    assert list(zipped.texts) == list(plain.texts)


def test_dir_reads_one_file_per_example_with_folder_labels(tmp_path):
    for label, texts in {"neg": ["bad", "worse"], "pos": ["good"]}.items():
        (tmp_path / label).mkdir()
        for index, text in enumerate(texts):
            write(tmp_path / label / f"{index}.txt", text)
    write(tmp_path / "pos" / "9.txt.gz", "great")
    write(tmp_path / "pos" / ".hidden", "ignored")
    examples = only(f"dir:{tmp_path}")
    assert list(examples.texts) == ["bad", "worse", "good", "great"]
    assert list(examples.labels) == ["neg", "neg", "pos", "pos"]


def test_dir_without_class_folders_is_a_data_error(tmp_path):
    write(tmp_path / "loose.txt", "text")
    with pytest.raises(DataError, match="one sub-folder per class"):
        only(f"dir:{tmp_path}")


def test_empty_text_is_skipped_and_noted_or_refused(tmp_path):
    path = write(tmp_path / "gaps.csv", 'text,label\nfine,a\n"  ",b\n,a\nok,b\n')
    data = read_source(f"csv:{path}", DataConfig())
    assert list(data.select("train").texts) == ["fine", "ok"]
    assert data.notes == [f"skipped 2 rows with empty text in csv:{path}"]
    with pytest.raises(DataError) as error:
        read_source(f"csv:{path}", DataConfig(empty_text="error"))
    assert "gaps.csv: line 3: empty or missing text" in str(error.value)


def test_row_missing_its_label_is_named(tmp_path):
    path = write(tmp_path / "short.csv", "text,label\nfine,a\nno label here\n")
    with pytest.raises(DataError, match="line 3: empty or missing label"):
        only(f"csv:{path}")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", "", "is empty"),
        ("blank.jsonl", "\n\n", "is empty"),
        (
            "cols.csv",
            "body,label\nx,a\n",
            "no text column 'text'; the columns are: body",
        ),
        (
            "cols.tsv",
            "text\tclass\nx\ta\n",
            "no label column 'label'; the columns are: t",
        ),
        ("keys.jsonl", '{"body": "x", "label": 1}\n', "the fields are: body, label"),
        ("bad.jsonl", '{"text": "x", "label": 1}\n{oops\n', "line 2: not JSON"),
        ("list.jsonl", '["x", 1]\n', "line 1: expected a JSON object"),
        ("header.csv", "text,label\n", "no examples with text"),
        ("broken.csv.gz", b"not gzip at all", "cannot read"),
    ],
)
def test_bad_files_raise_one_line_data_errors(tmp_path, name, content, message):
    path = tmp_path / name
    if name.endswith(".gz"):
        path.write_bytes(content)
    else:
        write(path, content)
    scheme = name.split(".")[1]
    with pytest.raises(DataError, match=message) as error:
        only(f"{scheme}:{path}")
    assert "\n" not in str(error.value)


def test_bytes_that_are_not_utf8_name_file_and_line(tmp_path):
    path = write(
        tmp_path / "latin1.csv", "text,label\nfine,a\ncaf\xe9,b\n".encode("latin-1")
    )
    with pytest.raises(DataError) as error:
        only(f"csv:{path}")
    assert f"{path}: line 3: bytes that are not UTF-8" in str(error.value)
    (tmp_path / "folder" / "a").mkdir(parents=True)
    bad = write(tmp_path / "folder" / "a" / "x.txt", b"ok\n\xff\xfe")
    with pytest.raises(DataError, match=f"{bad}: line 2: bytes that are not UTF-8"):
        only(f"dir:{tmp_path / 'folder'}")


def test_missing_file_and_folder_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="nope.csv is not found"):
        only(f"csv:{tmp_path / 'nope.csv'}")
    with pytest.raises(DataError, match="is a folder, not a file"):
        only(f"jsonl:{tmp_path}")
    with pytest.raises(DataError, match="nowhere is not found"):
        only(f"dir:{tmp_path / 'nowhere'}")


def test_label_values_become_names():
    assert [label_name(value) for value in (" pos ", 3, 2.0, True, None, "")] == [
        "pos",
        "3",
        "2",
        "true",
        None,
        None,
    ]
    with pytest.raises(DataError, match="neither a name nor an integer"):
        label_name(0.5)


def test_tfds_dataset_through_mock_data(tmp_path):
    config = DataConfig(data_dir=str(tmp_path))
    with tfds.testing.mock_data(num_examples=20):
        data = read_source("tfds:imdb_reviews", config, ("train", "test"))
    assert data.label_order == ["neg", "pos"]
    assert set(data.splits) == {"train", "test"}
    train = data.select("train")
    assert len(train) > 0
    assert all(isinstance(text, str) for text in train.texts)
    assert set(train.labels) <= {"neg", "pos"}


def test_tfds_fields_come_from_the_dataset_description(tmp_path):
    config = DataConfig(data_dir=str(tmp_path))
    with tfds.testing.mock_data(num_examples=8):
        # ag_news_subset declares (description, label) as its supervised keys.
        ag_news = read_source("tfds:ag_news_subset", config, ("train",))
        # glue/sst2 declares none: its only text feature is `sentence`.
        sst2 = read_source("tfds:glue/sst2", config, ("train",))
        titles = read_source(
            "tfds:ag_news_subset", DataConfig(text_field="title"), ("train",)
        )
        with pytest.raises(DataError, match="the features are: label, title, descr"):
            read_source("tfds:ag_news_subset", DataConfig(text_field="body"))
    assert ag_news.label_order == ["World", "Sports", "Business", "Sci/Tech"]
    assert sst2.label_order == ["negative", "positive"]
    assert len(sst2.select("train")) > 0
    assert list(titles.select("train").texts) != list(ag_news.select("train").texts)


def test_unknown_tfds_name_suggests_close_names():
    with pytest.raises(DataError) as error:
        read_source("tfds:imbd_reviews", DataConfig())
    assert str(error.value).startswith(
        "unknown TFDS dataset 'imbd_reviews'; did you mean imdb_reviews"
    )


def test_unknown_tfds_config_suggests_close_configs():
    with pytest.raises(DataError) as error:
        read_source("tfds:glue/sst3", DataConfig())
    assert str(error.value).startswith(
        "TFDS dataset 'glue' has no config 'sst3' (did you mean sst2"
    )
