import os

import numpy as np
import pytest

from tfrec_attn.data import DataFormatError, load_dataset, read_csv_dataset, read_movielens
from tfrec_attn.data.movielens import read_ml1m, read_ml_csv


def write(path, text, encoding="utf-8"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding=encoding, newline="") as handle:
        handle.write(text)
    return path


def test_ml100k_reads_everything(ml100k):
    assert len(ml100k.interactions) == 100_000
    assert len(ml100k.items) == 1682
    first = ml100k.interactions
    assert (first.user_ids[0], first.item_ids[0], first.timestamps[0], first.ratings[0]) == (
        "196", "242", 881250949, 3.0)
    toy = ml100k.items["1"]
    assert toy.title == "Toy Story (1995)" and toy.year == 1995
    assert toy.genres == ("Animation", "Children's", "Comedy")
    assert toy.text == "Toy Story (1995). Genres: Animation, Children's, Comedy"
    # Non-ASCII titles decode without mojibake, whether the file is latin-1 or UTF-8.
    assert ml100k.items["543"].title.startswith("Mis") and "Ã" not in ml100k.items["543"].title


@pytest.mark.parametrize(
    "line, field, problem",
    [
        ("1\t2\t3\n", "timestamp", "expected 4 fields"),
        ("1\t2\t3\t4\t5\n", "<line>", "expected 4 fields"),
        ("1\t2\t3\t88125x949\n", "timestamp", "not an integer"),
        ("\t2\t3\t881250949\n", "user_id", "empty id"),
        ("1\t \t3\t881250949\n", "item_id", "empty id"),
        ("1\t2\tfive\t881250949\n", "rating", "not a number"),
    ],
)
def test_malformed_ml100k_line_names_file_line_field(tmp_path, line, field, problem):
    good = "1\t10\t4\t100\n2\t10\t5\t101\n"
    write(tmp_path / "u.data", good + line + good)
    write(tmp_path / "u.item", "10|Film (1990)|01-Jan-1990||url|" + "|".join(["0"] * 19) + "\n",
          "latin-1")
    with pytest.raises(DataFormatError) as info:
        read_movielens(str(tmp_path))
    error = info.value
    assert (error.path, error.line, error.field) == (str(tmp_path / "u.data"), 3, field)
    assert str(error).startswith(f"{tmp_path / 'u.data'}:3: field '{field}': {problem}")


def test_skip_bad_lines_counts_them(tmp_path):
    write(tmp_path / "u.data", "1\t10\t4\t100\nbroken\n2\t10\t5\tnot-a-time\n3\t11\t1\t5\n")
    write(tmp_path / "u.item", "10|Film (1990)|01-Jan-1990||url|" + "|".join(["0"] * 19) + "\n")
    dataset = read_movielens(str(tmp_path), on_bad_line="skip")
    assert list(dataset.interactions.user_ids) == ["1", "3"]
    assert dataset.skipped.count == 2
    assert ":2: field" in dataset.skipped.examples[0] and ":3: field 'timestamp'" in dataset.skipped.examples[1]


def test_ml1m_reader(tmp_path):
    write(tmp_path / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n")
    write(tmp_path / "movies.dat", "1193::Misérables, Les (1995)::Drama\n"
          "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n", "latin-1")
    write(tmp_path / "users.dat", "1::F::1::10::48067\n")
    dataset = read_ml1m(str(tmp_path))
    assert list(dataset.interactions.item_ids) == ["1193", "661"]
    assert list(dataset.interactions.timestamps) == [978300760, 978302109]
    assert dataset.items["661"].genres == ("Animation", "Children's", "Musical")
    assert dataset.items["1193"].title == "Misérables, Les (1995)"  # latin-1 bytes
    write(tmp_path / "ratings.dat", "1::1193::5\n")
    with pytest.raises(DataFormatError, match=r"ratings.dat:1: field 'timestamp': expected 4 fields"):
        read_ml1m(str(tmp_path))


def test_ml_latest_csv_reader_handles_quoted_titles(tmp_path):
    write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n")
    write(tmp_path / "movies.csv", 'movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n'
          '3,"American President, The (1995)",(no genres listed)\n')
    dataset = read_ml_csv(str(tmp_path))
    assert dataset.items["3"].title == "American President, The (1995)"
    assert dataset.items["3"].genres == ()
    assert np.allclose(dataset.interactions.ratings, [4.0, 4.5])


def test_generic_csv_reader(tmp_path):
    inter = write(tmp_path / "events.csv", "item_id,user_id,timestamp,extra\nA,u1,5,x\nB,u1,6,y\nA,u2,7,z\n")
    items = write(tmp_path / "items.csv", 'item_id,title,genres,text\nA,Alpha,x|y,"long, text"\nB,Beta,,\n')
    dataset = read_csv_dataset(inter, items)
    assert list(dataset.interactions.user_ids) == ["u1", "u1", "u2"]
    assert np.isnan(dataset.interactions.ratings).all()
    assert dataset.items["A"].text == "Alpha. Genres: x, y. long, text"
    assert load_dataset(interactions=inter).name == "events"


def test_generic_csv_errors(tmp_path):
    bad_header = write(tmp_path / "a.csv", "user,item_id,timestamp\nu,i,1\n")
    with pytest.raises(DataFormatError, match=r"a.csv:1: field 'user_id': header lacks required column"):
        read_csv_dataset(bad_header)
    short = write(tmp_path / "b.csv", "user_id,item_id,timestamp,rating\nu,i,1,2\nu,i\n")
    with pytest.raises(DataFormatError, match=r"b.csv:3: field 'timestamp': expected 4 fields"):
        read_csv_dataset(short)
    float_time = write(tmp_path / "c.csv", "user_id,item_id,timestamp\nu,i,1.5\n")
    with pytest.raises(DataFormatError, match=r"c.csv:2: field 'timestamp': not an integer \(got '1.5'\)"):
        read_csv_dataset(float_time)
    inter = write(tmp_path / "d.csv", "user_id,item_id,timestamp\nu,i,1\n")
    dup = write(tmp_path / "items.csv", "item_id,title\ni,One\ni,Again\n")
    with pytest.raises(DataFormatError, match=r"items.csv:3: field 'item_id': duplicate item id"):
        read_csv_dataset(inter, dup)


def test_a_utf8_bom_is_skipped_not_read_into_the_header(tmp_path):
    from tfrec_attn.data import read_csv_dataset

    path = tmp_path / "events.csv"
    path.write_bytes(b"\xef\xbb\xbfuser_id,item_id,timestamp\n1,a,1\n1,b,2\n")
    dataset = read_csv_dataset(str(path))
    assert list(dataset.interactions.item_ids) == ["a", "b"]


def test_items_csv_reads_a_quoted_multiline_text_as_one_record(tmp_path):
    """A multi-line description is legitimate CSV: one record, whole text, later line numbers exact."""
    inter = write(tmp_path / "events.csv", "user_id,item_id,timestamp\nu1,A,1\nu1,B,2\n")
    items = write(tmp_path / "items.csv", 'item_id,title,text,genres\r\n'
                  'A,Alpha,"First line,\r\nsecond ""quoted"" line\r\n\r\nlast",x|y\r\n'
                  "B,Beta,plain,z\r\n\r\n"
                  "B,Again,dup,z\r\n")
    with pytest.raises(DataFormatError, match=r"items.csv:8: field 'item_id': duplicate item id"):
        read_csv_dataset(inter, items)
    dataset = read_csv_dataset(inter, items, on_bad_line="skip")
    assert dataset.items["A"].text == 'Alpha. Genres: x, y. First line,\nsecond "quoted" line\n\nlast'
    assert dataset.items["A"].genres == ("x", "y") and dataset.items["B"].title == "Beta"
    assert dataset.skipped.count == 1


def test_items_csv_line_breaks_outside_text_and_unclosed_quotes_are_bad_records(tmp_path):
    inter = write(tmp_path / "events.csv", "user_id,item_id,timestamp\nu1,A,1\n")
    items = write(tmp_path / "items.csv", 'item_id,title,genres\nA,"Al\npha",x\nB,Beta,"y\nz"\nC,Gamma,w\n'
                  'D,"Delta,\nE,Eps,v\n')
    with pytest.raises(DataFormatError, match=r"items.csv:2: field 'title': contains a line break \(its quoted "
                                              r"value runs from line 2 to 3\); only 'text' may span lines"):
        read_csv_dataset(inter, items)
    dataset = read_csv_dataset(inter, items, on_bad_line="skip")
    assert sorted(dataset.items) == ["C"]
    assert dataset.skipped.count == 3
    assert ":4: field 'genres': contains a line break" in dataset.skipped.examples[1]
    assert dataset.skipped.examples[2].startswith(
        f"{items}:7: field 'title': unclosed quote: the quoted value runs from this line to the end of the file "
        "(line 8)")
    # A record whose quoted value swallowed the next lines no longer fits the header.
    wide = write(tmp_path / "wide.csv", 'item_id,title,text\nA,"Alpha\n",B,Beta,t\nC,Gamma,t\n')
    with pytest.raises(DataFormatError, match=r"wide.csv:2: field '<line>': expected 3 fields \(item_id,title,"
                                              r"text\), found 5 in the record on lines 2-3"):
        read_csv_dataset(inter, wide)


def test_interactions_csv_quote_over_a_line_break_is_a_counted_bad_line(tmp_path):
    """Interactions never span lines: the line with the open quote is reported, never cut silently."""
    path = write(tmp_path / "events.csv", 'user_id,item_id,timestamp,note\nu1,A,1,"ok, fine"\n'
                 'u1,B,2,"runs\nu1,C,3,over"\nu2,A,4,\n')
    with pytest.raises(DataFormatError, match=r"events.csv:3: field 'note': unclosed quote: a quoted value opened "
                                              r"on this line does not close on it"):
        read_csv_dataset(path)
    dataset = read_csv_dataset(path, on_bad_line="skip")
    assert "B" not in set(dataset.interactions.item_ids)
    assert dataset.skipped.count == 1 and ":3: field 'note': unclosed quote" in dataset.skipped.examples[0]


def test_movies_csv_unclosed_quote_is_a_bad_line(tmp_path):
    write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n")
    write(tmp_path / "movies.csv", 'movieId,title,genres\n1,"Toy Story (1995),Animation\n2,Jumanji (1995),Fantasy\n')
    with pytest.raises(DataFormatError, match=r"movies.csv:2: field 'title': unclosed quote"):
        read_ml_csv(str(tmp_path))
    dataset = read_ml_csv(str(tmp_path), on_bad_line="skip")
    assert sorted(dataset.items) == ["2"] and dataset.skipped.count == 1
