"""The local web page and JSON API (`chatcell web`)."""
