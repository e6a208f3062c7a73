"""Layer 4, api: the W&B-shaped classes (Artifact, Run, Api) and what they show
(lineage, diff). Imports the layers below it."""
