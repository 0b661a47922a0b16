"""What a frozen ImageNet body makes of a photo: the backbone registry (`backbones`), the one `Embedder` and the
engines that run it (`embedder`), the on-disk feature cache (`cache`) and the exported feature classifier
(`classifier`)."""
