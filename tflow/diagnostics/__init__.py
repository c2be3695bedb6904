"""Diagnostics: what a perturbation does (`causal`: ablations, scale sweeps, token KL, senders alone), the figures
of those probes (`causal_figures`) and the plots of perturbations and sender states (`viz`)."""
