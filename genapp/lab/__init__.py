"""What the app's panels show, computed: typed dataclasses of tensors, arrays and numbers, no Gradio, no strings of
Markdown. The tabs only lay these out and format them; tests assert on these numbers.

`memo` holds every derived result worth keeping (density grids, likelihoods, bounds), weak-keyed on the model;
`grid` the density grid both the flows tab and the Train tab's snapshots use.
"""
