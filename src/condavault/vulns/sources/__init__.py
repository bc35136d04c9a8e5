"""Parsers for vulnerability feeds: CVE JSON 5, NVD (API 2.0 and legacy 1.1) and OSV.

Use :func:`condavault.vulns.sources.loader.load_path` to read files, directories or zip archives
with format auto-detection, and :func:`~condavault.vulns.sources.loader.merge_aliases` to merge
records describing the same vulnerability.
"""

from condavault.vulns.sources.cve5 import parse_cve5
from condavault.vulns.sources.loader import load_document, load_path, merge_aliases
from condavault.vulns.sources.nvd import parse_nvd, parse_nvd_cve
from condavault.vulns.sources.osv import parse_osv

__all__ = [
    "load_document",
    "load_path",
    "merge_aliases",
    "parse_cve5",
    "parse_nvd",
    "parse_nvd_cve",
    "parse_osv",
]
