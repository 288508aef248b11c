"""The lowest layer: file helpers every other layer uses, each written once.

``files`` (atomic writes, canonical JSON, sha256), ``cache`` (the cache folder), ``processes``
(process liveness). Imports nothing else of neurotrain.
"""
