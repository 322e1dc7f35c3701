"""Stacks: compose constructs and wire grants; the same stack class deploys to every stage."""
