"""CPE table and PyPI (parselmouth) name mapping."""

from __future__ import annotations

from vulns_testdata import data_path

from condavault.vulns.advisory import Affected
from condavault.vulns.mapping import NameMapping, load_cpe_table, normalize_pypi

REQUIRED = {
    "openssl",
    "zlib",
    "curl",
    "libcurl",
    "libxml2",
    "sqlite",
    "libpng",
    "python",
    "libtiff",
    "expat",
    "bzip2",
    "xz",
    "libssh2",
    "krb5",
    "openssh",
    "git",
    "nodejs",
    "pcre2",
    "libjpeg-turbo",
    "freetype",
    "lz4-c",
    "zstd",
    "ncurses",
    "readline",
    "libffi",
    "gnutls",
    "libnghttp2",
    "pillow",
    "numpy",
}


def test_shipped_table_covers_required_products() -> None:
    table = load_cpe_table()
    names = {n for values in table.values() for n in values}
    assert names >= REQUIRED
    assert table["zlib:zlib"][0] == "zlib"


def test_pep503() -> None:
    assert normalize_pypi("Flask_SQLAlchemy") == "flask-sqlalchemy"
    assert normalize_pypi("zope.interface") == "zope-interface"
    assert normalize_pypi("Pillow") == "pillow"


def test_cpe_and_generic() -> None:
    mapping = NameMapping.default()
    assert mapping.conda_names_for(Affected("cpe", "haxx", "curl")) == {"curl", "libcurl"}
    assert mapping.conda_names_for(Affected("generic", "OpenSSL", "OpenSSL")) == {"openssl"}
    # CVE 5 record that only names a packageName (tukaani xz)
    assert "xz" in mapping.conda_names_for(Affected("generic", package="xz"))
    assert mapping.conda_names_for(Affected("cpe", "fedoraproject", "fedora")) == set()
    assert mapping.conda_names_for(Affected("generic", "n/a", "n/a")) == set()
    assert mapping.conda_names_for(Affected("conda", package="zlib")) == {"zlib"}


def test_pypi_without_mapping_uses_normalised_name() -> None:
    mapping = NameMapping.default()
    assert mapping.conda_names_for(Affected("pypi", package="Flask")) == {"flask"}


def test_parselmouth_compressed(pypi_mapping: NameMapping) -> None:
    assert pypi_mapping.pypi_names("torch") == {"pytorch", "pytorch-cpu"}
    assert pypi_mapping.pypi_names("opencv_python") == {"py-opencv", "libopencv"}
    assert pypi_mapping.pypi_names("redis") == {"redis-py"}
    # bundles such as pyautogui (which also lists pillow) are not candidates for pillow
    assert pypi_mapping.pypi_names("Pillow") == {"pillow"}
    # "zlib" is a conda package that is not a PyPI package: no fallback
    assert pypi_mapping.pypi_names("zlib") == set()
    assert pypi_mapping.pypi_names("some-unknown-project") == {"some-unknown-project"}


def test_parselmouth_grayskull_style() -> None:
    mapping = NameMapping.load(data_path("mappings", "parselmouth", "mapping_as_grayskull.json"))
    assert {"pytorch", "pytorch-cpu"} <= mapping.pypi_names("torch")
    assert mapping.conda_names_for(Affected("pypi", package="opencv-python")) >= {"py-opencv"}
