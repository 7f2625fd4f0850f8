"""Reading labelled texts from files (:mod:`oneshot.modalities.text.files`): the accepted forms and a one-line
error naming the file and line for each malformed one. Pure parsing: no sentence encoder needed."""

from __future__ import annotations

import pytest

from oneshot.errors import OneshotError
from oneshot.modalities.text.files import is_table, read_lines, read_table


def test_lines_file(tmp_path):
    f = tmp_path / "greetings.txt"
    f.write_text("\ufeff hello there \n\n  hi\n", encoding="utf-8")
    assert read_lines(f) == ["hello there", "hi"]
    f.write_text("\n  \n")
    with pytest.raises(OneshotError, match="holds no text"):
        read_lines(f)
    with pytest.raises(OneshotError, match="does not exist"):
        read_lines(tmp_path / "missing.txt")
    with pytest.raises(OneshotError, match="is a folder"):
        read_lines(tmp_path)
    f.write_bytes(b"fine\nbad \xff byte\n")
    with pytest.raises(OneshotError, match=r"not valid UTF-8 \(line 2, byte 9\)"):
        read_lines(f)
    assert is_table(tmp_path / "a.JSONL") and is_table(tmp_path / "a.tsv") and not is_table(f)


def test_tables_in_three_forms_give_the_same_classes(tmp_path):
    csv_file, tsv_file, jsonl_file = tmp_path / "s.csv", tmp_path / "s.tsv", tmp_path / "s.jsonl"
    csv_file.write_text("Label,Text,Description\nflight,book a flight,book flight\nflight,fly me to Rome,\nhi,hello,\n")
    tsv_file.write_text("label\ttext\tdescription\nflight\tbook a flight\tbook flight\nflight\tfly me to Rome\t\nhi\thello\t\n")
    jsonl_file.write_text(
        '{"label": "flight", "text": "book a flight", "description": "book flight"}\n\n'
        '{"label": "flight", "text": "fly me to Rome"}\n{"label": "hi", "text": "hello"}\n'
    )
    tables = [read_table(f) for f in (csv_file, tsv_file, jsonl_file)]
    assert tables[0] == tables[1] == tables[2]
    assert tables[0]["flight"].examples == ["book a flight", "fly me to Rome"]
    assert tables[0]["flight"].description == "book flight" and tables[0]["hi"].description is None


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.jsonl", '{"label": "x", "text": "t"}\n{"label": \n', r"line 2 is not JSON"),
        ("a.jsonl", '["x", "t"]\n', r"line 1 is not a JSON object"),
        ("a.jsonl", "\n\n", "holds no rows"),
        ("a.csv", "label,text\n", "holds no rows"),
        ("a.csv", "name,text\nx,t\n", "has no 'label' column"),
        ("a.csv", "label,comment\nx,t\n", "has no 'text' column"),
        ("a.jsonl", '{"text": "t"}\n', "line 1 has no 'label'"),
        ("a.csv", "label,text\nx,t\n ,u\n", "line 3 has an empty label"),
        ("a.csv", "label,text,description\nx,t,one\nx,u,two\n", "line 3 gives 'x' a second, different description"),
        ("a.csv", "label,text,description\nx,t,\ny,,\n", "label 'y' has no example and no description"),
    ],
)
def test_malformed_tables_are_one_line_errors(tmp_path, name, content, message):
    f = tmp_path / name
    f.write_text(content)
    with pytest.raises(OneshotError, match=message) as exc:
        read_table(f)
    assert str(f) in str(exc.value) and "\n" not in str(exc.value)
