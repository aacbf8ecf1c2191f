"""Generation: model loading, conditioning media, offload, the `WanPipeline` and its sidecar."""
