"""score_sde_knee: segmentation-guided knee radiograph generation with score-based models."""
