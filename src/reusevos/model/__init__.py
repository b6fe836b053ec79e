"""Network parts: backbone, target model, refinement network, reuse-path modules."""
