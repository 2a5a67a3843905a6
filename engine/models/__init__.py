"""Model zoo: every architecture of the five seed code bases, built by name through one `create_model`.

Each model is plain Conv2d / Linear / BatchNorm modules returning raw logits, so masks and Bezier curves
(torch.func.functional_call) work on any of them. Definitions live in the family modules beside this one.
"""

from .registry import UnknownArch, canonical_arch, create_model, list_archs

__all__ = ["create_model", "canonical_arch", "list_archs", "UnknownArch"]
