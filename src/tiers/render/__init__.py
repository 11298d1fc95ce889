"""Renderers: text (Stata and lme4 layouts) and JSON. They format; they compute nothing new."""
