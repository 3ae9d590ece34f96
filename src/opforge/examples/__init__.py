"""Built-in example models and the op cases opforge is checked on."""
