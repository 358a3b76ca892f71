"""data.corpora: the search order for the reference corpora, and the checksummed download.

The network is replaced by a fake `urlopen` serving the real files (from the folder the suite
found), so the download path runs offline: a good copy is written, a corrupt one is refused, and
no connection gives one line naming the file and the variable to set.
"""

import hashlib
import io
import urllib.request

import pytest

from data import corpora
from data.paths import DataError


@pytest.fixture
def no_env(monkeypatch, tmp_path):
    monkeypatch.delenv(corpora.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


def serve(monkeypatch, files, corrupt=()):
    """Make urlopen return `files[name]` for each canonical URL (a flipped byte for `corrupt`)."""
    by_url = {url: name for name, (url, _) in corpora.FILES.items()}
    fetched = []

    def urlopen(url, timeout):
        name = by_url[url]
        fetched.append(name)
        data = files[name]
        return io.BytesIO(bytes([data[0] ^ 1]) + data[1:] if name in corrupt else data)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return fetched


@pytest.fixture(scope="module")
def real_files(shared_data):
    return {name: (shared_data / name).read_bytes() for name in corpora.FILES}


def test_the_checksums_are_those_of_the_files_the_suite_reads(real_files):
    assert {name: hashlib.sha256(data).hexdigest() for name, data in real_files.items()} == \
        {name: sha256 for name, (_, sha256) in corpora.FILES.items()}


def test_the_variable_comes_first_and_must_hold_every_file(monkeypatch, no_env, shared_data):
    monkeypatch.setenv(corpora.ENV_VAR, str(shared_data))
    assert corpora.data_folder([no_env / "elsewhere"]) == shared_data
    monkeypatch.setenv(corpora.ENV_VAR, str(no_env))
    with pytest.raises(DataError, match=f"tinyshakespeare/input.txt: not found \\(\\${corpora.ENV_VAR}"):
        corpora.data_folder([shared_data])


def test_the_first_existing_candidate_is_next(no_env, shared_data):
    assert corpora.data_folder([no_env / "absent", shared_data]) == shared_data


def test_the_cache_is_filled_by_checked_downloads_once(monkeypatch, no_env, real_files):
    fetched = serve(monkeypatch, real_files)
    folder = corpora.data_folder([no_env / "absent"])
    assert folder == no_env / "cache" / "llama2-scratch" / "data"
    assert {name: (folder / name).read_bytes() for name in corpora.FILES} == real_files
    assert sorted(fetched) == sorted(corpora.FILES)
    corpora.data_folder([])
    assert len(fetched) == len(corpora.FILES)      # nothing fetched twice


def test_a_corrupt_download_is_refused_and_not_kept(monkeypatch, no_env, real_files):
    serve(monkeypatch, real_files, corrupt={"llama2/tokenizer.bin"})
    with pytest.raises(DataError, match="tokenizer.bin: sha256 [0-9a-f]{64} is not the expected 50a52ef8"):
        corpora.data_folder([])
    assert not (corpora.cache_folder() / "llama2" / "tokenizer.bin").exists()
    assert (corpora.cache_folder() / "llama2" / "tokenizer.model").is_file()   # fetched before it


def test_offline_names_the_file_and_the_variable(monkeypatch, no_env):
    def urlopen(url, timeout):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    with pytest.raises(DataError) as info:
        corpora.data_folder([])
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(corpora.cache_folder() / "tinyshakespeare" / "input.txt"))
    assert "no route to host" in message and f"${corpora.ENV_VAR}" in message
