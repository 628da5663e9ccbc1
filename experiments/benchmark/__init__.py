"""``optlab benchmark``: the DeepOBS protocol with every learning-rate grid as one vmapped population."""
