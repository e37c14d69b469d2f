"""Synthetic survey scenes with exact ground truth, and fast training chips (see docs/synth.md).

Submodules: :mod:`~rams.synth.scene` (config, layout, rendering), :mod:`~rams.synth.terrain`,
:mod:`~rams.synth.objects`, :mod:`~rams.synth.camera`, :mod:`~rams.synth.chips` (GDAL-free training chips)
and :mod:`~rams.synth.writer` (GeoTIFF + GeoPackage + scene.json; the only one importing rasterio).
Import the submodule you need; this package imports nothing heavy.
"""
