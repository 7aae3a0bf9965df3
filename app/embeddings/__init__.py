"""Sentence embeddings: the port (:class:`~app.embeddings.base.Embedder`) and the local model."""
