"""The dashboard's static page, script and style, shipped as package data (no CDN: it works offline)."""
