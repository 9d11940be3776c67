"""Data sets: PASCAL VOC (real or synthetic) and scikit-learn's bundled digits."""
