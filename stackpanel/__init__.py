"""stackpanel: a control panel for nginx/apache → gunicorn/uvicorn → FastAPI/Flask stacks."""
__version__ = "0.1.0"
