"""What is done with a trained run: rotor energy profiles, molecular dynamics, IR spectra."""
