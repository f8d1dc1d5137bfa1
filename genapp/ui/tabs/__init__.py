"""One module per tab, each with `build_tab(ctx)`: it lays out and wires what `genapp.lab` computes."""
