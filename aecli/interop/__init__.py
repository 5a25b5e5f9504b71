"""Interoperability with other tools' model formats (diffusers, LDM/Stable Diffusion)."""
