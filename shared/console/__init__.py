"""The operator console: a server-rendered web page served by the function app itself
(functions/console.py wires the routes). ``links`` says where it is, ``pages`` renders it (pure,
every value escaped), ``csrf`` guards its forms; ``static/`` holds its hand-written CSS and JS."""
