"""Input fingerprints: an orthomosaic is identified with every file GDAL reads it from (a VRT's blocks, masks,
a .aux.xml that changes how it reads), and a shapefile layer with all its parts."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from shapely.geometry import box

from rams.errors import InputNotFoundError
from rams.provenance import dataset_hash, fast_file_hash, layer_hash
from rams.raster import open_raster
from tests.conftest import write_geotiff

BLOCK = 64


def _block(path: Path, col: int, value: int) -> Path:
    data = np.full((3, BLOCK, BLOCK), value, np.uint8)
    data[:, ::5, ::3] = value // 2 + 1
    return write_geotiff(path, height=BLOCK, width=BLOCK, data=data, origin=(500000.0 + col * BLOCK * 0.01, 4400000.0))


def _vrt(path: Path, blocks: list[Path]) -> Path:
    """A VRT mosaic of blocks side by side (as gdalbuildvrt writes it, by hand: no GDAL command needed)."""
    with rasterio.open(blocks[0]) as src:
        crs_wkt, t = src.crs.to_wkt(), src.transform
    bands = []
    for b in (1, 2, 3):
        sources = "".join(
            f'<SimpleSource><SourceFilename relativeToVRT="1">{p.relative_to(path.parent).as_posix()}'
            f"</SourceFilename><SourceBand>{b}</SourceBand>"
            f'<SrcRect xOff="0" yOff="0" xSize="{BLOCK}" ySize="{BLOCK}"/>'
            f'<DstRect xOff="{i * BLOCK}" yOff="0" xSize="{BLOCK}" ySize="{BLOCK}"/></SimpleSource>'
            for i, p in enumerate(blocks)
        )
        ci = ("Red", "Green", "Blue")[b - 1]
        bands.append(f'<VRTRasterBand dataType="Byte" band="{b}"><ColorInterp>{ci}</ColorInterp>{sources}'
                     "</VRTRasterBand>")
    gt = ", ".join(repr(v) for v in (t.c, t.a, t.b, t.f, t.d, t.e))
    path.write_text(f'<VRTDataset rasterXSize="{BLOCK * len(blocks)}" rasterYSize="{BLOCK}"><SRS>{crs_wkt}</SRS>'
                    f"<GeoTransform>{gt}</GeoTransform>{''.join(bands)}</VRTDataset>")
    return path


def test_a_plain_geotiff_keeps_its_file_hash(make_geotiff) -> None:
    p = make_geotiff()
    assert dataset_hash(p) == fast_file_hash(p)
    # overviews are never read for analysis: building them changes nothing
    with rasterio.open(p, "r+") as dst:
        from rasterio.enums import Resampling

        dst.build_overviews([2], Resampling.nearest)  # internal: the file changes, so its hash does
    q = p.with_name("ext.tif")
    q.write_bytes(p.read_bytes())
    before = dataset_hash(q)
    q.with_name("ext.tif.ovr").write_bytes(b"not read")
    assert dataset_hash(q) == before


def test_a_vrt_is_identified_by_its_blocks(tmp_path: Path) -> None:
    a, b = _block(tmp_path / "a.tif", 0, 120), _block(tmp_path / "b.tif", 1, 160)
    vrt = _vrt(tmp_path / "mosaic.vrt", [a, b])
    with open_raster(vrt) as src:  # a real, readable mosaic of both blocks
        assert (src.width, src.height) == (2 * BLOCK, BLOCK)
        assert src.read(1)[0, 1] == 120 and src.read(1)[0, BLOCK + 1] == 160
    first = dataset_hash(vrt)
    assert first.startswith("sha256-dataset:") and first != fast_file_hash(vrt)
    assert dataset_hash(vrt) == first  # deterministic
    # one block exported again with other pixels (same size, same name): the VRT's own bytes do not change
    vrt_bytes = vrt.read_bytes()
    _block(b, 1, 200)
    assert vrt.read_bytes() == vrt_bytes
    assert dataset_hash(vrt) != first
    _block(b, 1, 160)
    assert dataset_hash(vrt) == first


def test_a_aux_xml_counts_for_what_it_changes_not_for_statistics(make_geotiff) -> None:
    p = make_geotiff()
    first = dataset_hash(p)
    aux = p.with_name(p.name + ".aux.xml")
    # what QGIS or gdalinfo -stats write: no pixel changes, nor does the hash
    aux.write_text('<PAMDataset><PAMRasterBand band="1"><Histograms><HistItem><HistMin>0</HistMin></HistItem>'
                   '</Histograms><Metadata><MDI key="STATISTICS_MEAN">140</MDI></Metadata></PAMRasterBand>'
                   "</PAMDataset>")
    assert dataset_hash(p) == first
    # a nodata value set there changes which pixels are imaged: GDAL honours it, and the hash changes
    aux.write_text("<PAMDataset>" + "".join(f'<PAMRasterBand band="{b}"><NoDataValue>0</NoDataValue></PAMRasterBand>'
                                            for b in (1, 2, 3)) + "</PAMDataset>")
    with open_raster(p) as src:
        assert src.nodata == 0
    assert dataset_hash(p) != first


def test_a_vrt_with_a_missing_block_is_refused_at_open(tmp_path: Path) -> None:
    a, b = _block(tmp_path / "a.tif", 0, 120), _block(tmp_path / "b.tif", 1, 160)
    vrt = _vrt(tmp_path / "mosaic.vrt", [a, b])
    b.unlink()
    with pytest.raises(InputNotFoundError, match=r"made of files that are missing: .*b\.tif.*gdalbuildvrt"):
        open_raster(vrt)


def test_a_shapefile_layer_is_identified_by_all_its_parts(tmp_path: Path) -> None:
    shp = tmp_path / "sha.shp"
    gdf = gpd.GeoDataFrame({"sha_id": ["SHA-1"]}, geometry=[box(0, 0, 10, 10)], crs="EPSG:32638")
    gdf.to_file(shp)
    first = layer_hash(shp)
    gdf.assign(sha_id=["SHA-2"]).to_file(shp)  # an ID edited: only the .dbf changes
    assert layer_hash(shp) != first
    gdf.to_file(shp)
    assert layer_hash(shp) == first
    gdf.set_crs("EPSG:32637", allow_override=True).to_file(shp)  # the CRS fixed: only the .prj changes
    assert layer_hash(shp) != first
    gpkg = tmp_path / "sha.gpkg"
    gdf.to_file(gpkg)
    assert "sha256:" + layer_hash(gpkg) == fast_file_hash(gpkg)  # one-file formats: the whole file, as before


def test_a_vrt_over_coarser_sources_is_judged_at_their_resolution(tmp_path: Path) -> None:
    """A VRT at 1 cm over one 1 cm block and one 2 cm block (two flights): the 2 cm ground resolves no more for being
    resampled onto the finer grid, so the mosaic's GSD is 2 cm (what the GSD checks and quality use)."""
    from rams.raster import gsd_of

    a = _block(tmp_path / "a.tif", 0, 120)
    b = write_geotiff(tmp_path / "b.tif", height=BLOCK // 2, width=BLOCK // 2, gsd=0.02,
                      origin=(500000.0 + BLOCK * 0.01, 4400000.0))
    vrt = _vrt(tmp_path / "mixed.vrt", [a, b])
    text = vrt.read_text().replace(f'xSize="{BLOCK}" ySize="{BLOCK}"/><DstRect xOff="{BLOCK}"',
                                   f'xSize="{BLOCK // 2}" ySize="{BLOCK // 2}"/><DstRect xOff="{BLOCK}"')
    vrt.write_text(text)
    with open_raster(vrt) as src:
        assert src.read(1).shape == (BLOCK, 2 * BLOCK)
        assert gsd_of(src) == pytest.approx(0.02)
    same = _vrt(tmp_path / "same.vrt", [a, _block(tmp_path / "c.tif", 1, 90)])
    with open_raster(same) as src:
        assert gsd_of(src) == pytest.approx(0.01)


def test_hashes_of_two_kinds_are_compared_by_size_only() -> None:
    """`rams detect` with full_hash hashes a big mosaic whole ("sha256:"), `rams quality` on its own samples it
    ("sha256-sampled:"): the two cannot be compared, so the file sizes decide; hashes of one kind must be equal."""
    from rams.errors import InputError
    from rams.provenance import hashed_in_full, require_same_mosaic

    assert hashed_in_full("sha256:ab") and hashed_in_full("sha256-dataset-full:ab")
    assert not hashed_in_full("sha256-sampled:ab") and not hashed_in_full("sha256-dataset:ab")
    require_same_mosaic("sha256:aa", "a.tif", "sha256-sampled:bb", "a.tif", "x", "1000", "1000")
    require_same_mosaic("sha256:aa", "a.tif", "sha256-sampled:bb", "a.tif", "x")  # sizes unknown: not refused
    with pytest.raises(InputError, match="detections come from a.tif but the coverage quality was judged on b.tif"):
        require_same_mosaic("sha256:aa", "a.tif", "sha256-sampled:bb", "b.tif", "x", "1000", "2000")
    with pytest.raises(InputError, match="detections come from"):
        require_same_mosaic("sha256-sampled:aa", "a.tif", "sha256-sampled:bb", "b.tif", "x", "1000", "1000")
