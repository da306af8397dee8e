"""Research scripts that answered one question each about the samplers and the models
(README.md here gives the findings); benchmarks/ holds what a user reruns."""
