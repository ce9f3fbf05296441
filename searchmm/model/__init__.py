"""Models: what identifies one (`spec`), the encoder seam (`encoder`), open_clip (`loading`)."""
