"""The tabs' callbacks: plain values (and the visitor's Session as `extra`) in, frames, figures and Markdown
out, tested without a browser. `genapp.ui.tabs` lays them out and wires them to components."""
