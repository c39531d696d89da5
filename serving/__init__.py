"""The model server: a `kserve.Model` for the trained review classifier, batching concurrent requests.

`python -m serving --model-dir DIR --port N` serves it (V1 and V2 protocols, readiness, /metrics);
`classifier` is the model logic without HTTP, `batcher` the request batching, `model` the KServe model,
`server` the process around it.  README.md, "Serving a model", lists the routes, limits and settings.
"""
