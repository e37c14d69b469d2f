"""Flight batches: many orthomosaics, resumable, on one laptop or a Dask cluster (``rams batch``).

* :mod:`.manifest`: which flights (a folder of orthomosaics, or a YAML/CSV manifest with flight metadata);
* :mod:`.status`: per-flight status keyed by input, model and config hashes (atomic JSON), the resume logic;
* :mod:`.distributed`: the Dask cluster (local or remote) and the task functions its workers run;
* :mod:`.run`: the orchestration (plan, tile-range tasks, coverage quality, per-flight GeoPackages, survey);
* :mod:`.fuse`: one survey from many flights: detections seen by several flights fused into one object.

Import the submodules directly; this package init stays light.
"""
