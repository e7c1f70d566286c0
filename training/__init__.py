"""Recipes: the mains that train and measure the shapes-world models (tokenizer, generator,
judges, judge data and accuracy, detector and generator measurements).

They are applications, not library: a recipe may import any package of the project, and no
module outside ``training/`` imports one.
"""
