"""The detector: network (:mod:`.model`), model bundles (:mod:`.bundle`), inference (:mod:`.predict`),
training (:mod:`.train`, with :mod:`.datasets` and :mod:`.augment`).

Import the submodules directly; this package init stays light so that ``rams --help`` does not load torch.
"""
