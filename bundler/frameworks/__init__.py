"""TensorFlow and Keras themselves: whether they are installed, and every reach into Keras's private
code."""
