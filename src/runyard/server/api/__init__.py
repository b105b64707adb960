"""HTTP routes: thin translations between wire schemas and services."""
