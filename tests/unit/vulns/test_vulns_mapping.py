"""CPE table and PyPI (parselmouth) name mapping."""

from __future__ import annotations

from vulns_testdata import data_path

from condavault.vulns.advisory import Affected
from condavault.vulns.mapping import NameMapping, load_cpe_table, normalize_pypi
from condavault.vulns.sources.names import classify

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


def test_pypi_names_are_normalised_and_renamed_by_default() -> None:
    mapping = NameMapping.default()  # shipped tables only: no configuration
    assert mapping.conda_names_for(Affected("pypi", package="Flask")) == {"flask"}
    # PyPI jupyter-server meets conda jupyter_server (any separator spelling)
    assert "jupyter_server" in mapping.pypi_names("jupyter-server")
    assert {"zope.interface", "zope_interface", "zope-interface"} <= mapping.pypi_names("zope.interface")
    # renames PEP 503 cannot find come from the shipped table
    assert mapping.pypi_names("torch") >= {"pytorch"} and "torch" not in mapping.pypi_names("torch")
    assert "py-opencv" in mapping.pypi_names("opencv-python")
    # PyPI redis is conda redis-py, never the redis server
    assert mapping.pypi_names("redis") == {"redis-py"}


def test_parselmouth_compressed(pypi_mapping: NameMapping) -> None:
    assert pypi_mapping.pypi_names("torch") >= {"pytorch", "pytorch-cpu"}
    assert pypi_mapping.pypi_names("opencv_python") >= {"py-opencv", "libopencv"}
    assert pypi_mapping.pypi_names("redis") == {"redis-py"}
    assert pypi_mapping.pypi_names("Pillow") == {"pillow"}
    # "zlib" is a conda package that is not a PyPI package: no fallback
    assert pypi_mapping.pypi_names("zlib") == set()
    assert "some_unknown_project" in pypi_mapping.pypi_names("some-unknown-project")


def test_is_versus_bundles(pypi_mapping: NameMapping) -> None:
    """parselmouth lists lxml in inkscape and pip in nsight-compute: those bundle a copy, they are not lxml/pip."""
    lxml = pypi_mapping.pypi_targets("lxml")
    assert lxml["lxml"].kind == "direct"
    assert lxml["inkscape"].kind == "bundled" and "inkscape bundles a copy of PyPI lxml" in lxml["inkscape"].via
    pip = pypi_mapping.pypi_targets("pip")
    assert pip["pip"].kind == "direct" and pip["nsight-compute"].kind == "bundled"
    assert pip["ansible"].kind == "bundled"  # ansible is ansible; it carries pip
    assert pypi_mapping.pypi_targets("pillow")["pyautogui"].kind == "bundled"
    assert pypi_mapping.pypi_targets("torch")["pytorch"].kind == "direct"


def test_classify_rules() -> None:
    assert classify("inkscape", ["lxml"]) == {"lxml": "bundles"}
    assert classify("nsight-compute", ["pip"]) == {"pip": "bundles"}
    assert classify("pytorch", ["torch"]) == {"torch": "is"}
    assert classify("redis-py", ["redis"]) == {"redis": "is"}
    assert classify("py-opencv", ["opencv-python", "opencv-python-headless"]) == {
        "opencv-python": "is",
        "opencv-python-headless": "is",
    }
    assert classify("ansible", ["ansible", "ansible-base", "pip"]) == {
        "ansible": "is",
        "ansible-base": "bundles",
        "pip": "bundles",
    }
    assert classify("google-cloud-bigquery-storage-core", ["google-cloud-bigquery-storage", "google-cloud-core"]) == {
        "google-cloud-bigquery-storage": "is",
        "google-cloud-core": "bundles",
    }


def test_parselmouth_grayskull_style() -> None:
    mapping = NameMapping.load(data_path("mappings", "parselmouth", "mapping_as_grayskull.json"))
    assert {"pytorch", "pytorch-cpu"} <= mapping.pypi_names("torch")
    assert mapping.conda_names_for(Affected("pypi", package="opencv-python")) >= {"py-opencv"}
