import functools
import hashlib
import http.server
import os
import threading
import zipfile

import pytest

from tfrec_attn.data import ChecksumError, DataNotFoundError, download_movielens, locate_movielens


@pytest.fixture()
def http_root(tmp_path):
    """A static file server on 127.0.0.1 serving ``tmp_path/www``."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def make_zip(path, source_dir, inner="ml-100k", files=("u.data", "u.item", "u.user")):
    with zipfile.ZipFile(path, "w") as zf:
        for name in files:
            zf.write(os.path.join(source_dir, name), f"{inner}/{name}")
    with open(path, "rb") as handle:
        return hashlib.md5(handle.read()).hexdigest()


def test_download_verifies_and_extracts(http_root, tmp_path, ml100k_dir):
    www, base = http_root
    md5 = make_zip(www / "ml-100k.zip", ml100k_dir)
    cache = tmp_path / "cache"
    path = download_movielens("ml-100k", str(cache), url=f"{base}/ml-100k.zip", md5=md5)
    assert path == str(cache / "ml-100k")
    assert sorted(os.listdir(path)) == ["u.data", "u.item", "u.user"]
    assert os.listdir(cache) == ["ml-100k"]  # no temp files left behind


def test_corrupted_download_is_rejected_and_not_cached(http_root, tmp_path, ml100k_dir):
    www, base = http_root
    # The pinned MD5 is GroupLens's; a re-packed (here: different) archive must fail it.
    make_zip(www / "ml-100k.zip", ml100k_dir)
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError, match="does not match the pinned 0e33842e24a9c977be4e0107933c0723"):
        download_movielens("ml-100k", str(cache), url=f"{base}/ml-100k.zip")
    assert os.listdir(cache) == []
    # Truncated archive with a known-good checksum given: also rejected, nothing cached.
    good_md5 = make_zip(www / "good.zip", ml100k_dir)
    data = (www / "good.zip").read_bytes()
    (www / "truncated.zip").write_bytes(data[: len(data) // 2])
    with pytest.raises(ChecksumError):
        download_movielens("ml-100k", str(cache), url=f"{base}/truncated.zip", md5=good_md5)
    assert os.listdir(cache) == []


def test_latest_release_uses_published_md5(http_root, tmp_path):
    www, base = http_root
    src = tmp_path / "src"
    src.mkdir()
    (src / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,1\n")
    (src / "movies.csv").write_text("movieId,title,genres\n1,Toy Story (1995),Animation\n")
    md5 = make_zip(www / "ml-latest-small.zip", src, "ml-latest-small", ("ratings.csv", "movies.csv"))
    (www / "ml-latest-small.zip.md5").write_text(f"MD5 (ml-latest-small.zip) = {md5}\n")
    path = download_movielens("ml-latest-small", str(tmp_path / "c"), url=f"{base}/ml-latest-small.zip")
    assert os.path.isfile(os.path.join(path, "ratings.csv"))
    (www / "ml-latest-small.zip.md5").write_text("0" * 32)
    with pytest.raises(ChecksumError):
        download_movielens("ml-latest-small", str(tmp_path / "d"), url=f"{base}/ml-latest-small.zip")


def test_offline_error_says_what_to_put_where(tmp_path, monkeypatch):
    monkeypatch.setenv("TFREC_ATTN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TFREC_ATTN_DATA", raising=False)
    with pytest.raises(DataNotFoundError) as info:
        locate_movielens(None, "ml-100k", url="http://127.0.0.1:9/ml-100k.zip")
    message = str(info.value)
    assert "u.data, u.item, u.user" in message and str(tmp_path / "cache" / "ml-100k") in message
    assert "--data" in message
    with pytest.raises(DataNotFoundError, match="no MovieLens files there"):
        locate_movielens(str(tmp_path), "ml-100k")


def test_locate_order(tmp_path, monkeypatch, ml100k_dir):
    monkeypatch.setenv("TFREC_ATTN_DATA", ml100k_dir)
    assert locate_movielens(None) == ml100k_dir
    monkeypatch.delenv("TFREC_ATTN_DATA")
    monkeypatch.setenv("TFREC_ATTN_CACHE", str(tmp_path))
    cached = tmp_path / "ml-100k"
    cached.mkdir()
    for name in ("u.data", "u.item", "u.user"):
        (cached / name).write_text("")
    assert locate_movielens(None, download=False) == str(cached)
