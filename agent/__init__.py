"""nbferry.agent: the in-kernel agent (recorder, capture, restore). Not yet implemented."""
