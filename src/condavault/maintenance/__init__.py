"""Maintenance beside a running server: ``condavault check [--repair]`` (:mod:`.check`), what points at
blobs and their safe collection (:mod:`.references`), index verification (:mod:`.verify`)."""
