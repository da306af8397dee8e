# Keeps `datasets` a package of this repository (it shadows Hugging Face `datasets`, which
# this project never uses).
