"""Repository tooling, not part of the importable library: classroom material (slides, student copies, the static
site, the course map) built from the notebooks of this checkout. Run from the repository root:
``python -m tools.classroom {slides,students,site,map,tag}`` (the Makefile's targets do)."""
